"""The paper's second protocol (Places2 with the NVIDIA masks) and sharded data preparation:
mask categories read from the files, the NVIDIA-style demo masks, the Places2 reader, the plan,
its shards and their gather (byte for byte an unsharded run's files), and the bad inputs."""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from ndmha.data.demo import draw_face, draw_nvidia_mask, make_demo_dataset, write_places2_layout
from ndmha.data.masks import (
    NVIDIA_CATEGORIES,
    balanced_order,
    mask_category,
    nvidia_index,
    touches_border,
)
from ndmha.data.prepare import convert_images, convert_listed, overlay_masks, prepare_masks
from ndmha.data.sources import (
    convert_shard,
    gather_shards,
    masks_shard,
    places2_images,
    plan_sources,
    read_file_list,
    shard_block,
)
from ndmha.data.split import make_split
from ndmha.errors import DataError
from test_workflow import ROOT, TINY, WEIGHTS_ALLOWED_MISSING, _with, snakemake


def test_nvidia_style_masks_fill_the_six_categories_half_touching_the_border() -> None:
    """120 demo masks: 20 in each of the six categories, read back from the pixels, and in each
    category 10 that touch the border and 10 that keep clear of it."""
    found = pd.DataFrame([mask_category(draw_nvidia_mask(128, 3, i)) for i in range(120)])
    counts = found.groupby(["mask_category", "mask_border"]).size()
    assert set(found["mask_category"]) == set(NVIDIA_CATEGORIES)
    assert (counts == 10).all() and len(counts) == 12
    assert found["mask_border"].mean() == 0.5


def test_nvidia_style_masks_are_binary_deterministic_and_angular() -> None:
    a, b = draw_nvidia_mask(96, 0, 7), draw_nvidia_mask(96, 0, 7)
    assert np.array_equal(a, b) and not np.array_equal(a, draw_nvidia_mask(96, 1, 7))
    assert set(np.unique(a)) <= {0, 255}
    # boxes and straight strokes: the holes' outlines approximate to few-vertex polygons, where
    # the QD-IMD-like strokes (ndmha.data.demo.draw_mask) are round-capped curves
    contours, _ = cv2.findContours(a, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    vertices = [len(cv2.approxPolyDP(c, 2.0, True)) for c in contours if cv2.contourArea(c) > 30]
    # a box approximates to 4 vertices and a straight stroke of round caps to about 8-10 at
    # 2 px; a random-walk stroke's curved outline to dozens
    assert vertices and np.median(vertices) <= 12


def _write(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask)
    return path


def test_category_and_border_come_from_the_pixels_not_the_name(tmp_path: Path) -> None:
    small = np.zeros((100, 100), np.uint8)
    small[40:45, 40:60] = 255                       # 1 %: 0-10 %, clear of the border
    big = np.zeros((100, 100), np.uint8)
    big[:, :55] = 255                               # 55 %, touching three edges
    _write(tmp_path / "m" / "50-60_border.png", small)
    _write(tmp_path / "m" / "01-10_inner.png", big)
    index = nvidia_index(tmp_path / "m")
    assert index["mask"].map(lambda p: p.name).tolist() == ["01-10_inner.png", "50-60_border.png"]
    assert index["mask_category"].tolist() == ["50-60%", "0-10%"]
    assert index["mask_border"].tolist() == [True, False]
    near = np.zeros((50, 50), bool)
    near[2, 20] = True                              # two pixels in from the top edge
    assert not touches_border(near, 1) and not touches_border(near, 2)
    assert touches_border(near, 3)


def test_balanced_order_spreads_every_prefix_over_the_groups() -> None:
    index = pd.DataFrame([{"mask_category": NVIDIA_CATEGORIES[i % 6],
                           "mask_border": (i // 6) % 2 == 0} for i in range(60)])
    order = balanced_order(index)
    assert sorted(order) == list(range(60))
    first = index.iloc[order[:12]]
    assert len(first.groupby(["mask_category", "mask_border"])) == 12
    assert first["mask_category"].tolist()[:2] == ["0-10%", "0-10%"]


def test_a_wrong_count_and_a_grey_mask_are_one_error_each(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "m" / f"{i}.png", draw_nvidia_mask(64, 0, i))
    with pytest.raises(DataError, match=r"found 3 masks, data.mask_count says 12000"):
        nvidia_index(tmp_path / "m", expected=12000)
    grey = draw_nvidia_mask(64, 0, 5)
    grey[10, 10] = 128
    _write(tmp_path / "m" / "3.png", grey)
    with pytest.raises(DataError, match=r"3\.png: not a binary mask \(1 pixels"):
        nvidia_index(tmp_path / "m", mask_binary="strict")
    assert len(nvidia_index(tmp_path / "m", mask_binary="threshold")) == 4


@pytest.fixture
def places2(tmp_path: Path) -> Path:
    root = tmp_path / "places365"
    write_places2_layout(root, n_train=9, n_val=5, size=40, seed=0)
    return root


def test_places2_layout_and_file_lists_are_read(places2: Path) -> None:
    assert read_file_list(places2 / "places365_train_standard.txt")[0] == \
        "a/abbey/00000001.jpg"
    images = places2_images(places2, "256", "places365_train_standard.txt",
                            "places365_val.txt", n_train=6, n_test=0)
    train = [i for i in images if i[2] == "train"]
    test = [i for i in images if i[2] == "test"]
    assert len(train) == 6 and len(test) == 5
    assert {i[0].split("-")[1] for i in train} == {"abbey", "beach", "canyon"}  # seeded choice
    assert ("Places365_val_00000001", places2 / "val_256" / "Places365_val_00000001.jpg",
            "test") in test
    again = places2_images(places2, "256", "places365_train_standard.txt",
                           "places365_val.txt", n_train=6, n_test=0)
    assert again == images
    (places2 / "subset.txt").write_text("/a/abbey/00000001.jpg 0\nPlaces365_val_00000002.jpg 1\n")
    subset = places2_images(places2, "256", "places365_train_standard.txt", "places365_val.txt",
                            0, 0, subset_list="subset.txt")
    assert [i[0] for i in subset] == ["a-abbey-00000001", "Places365_val_00000002"]


def test_places2_bad_lists_are_named(places2: Path) -> None:
    args = (places2, "256", "places365_train_standard.txt", "places365_val.txt")
    with pytest.raises(DataError, match=r"places365_val.txt: lists 5 images, 50 are configured"):
        places2_images(*args, 1, 50)
    (places2 / "data_256" / "b" / "beach" / "00000001.jpg").unlink()
    with pytest.raises(DataError, match=r"places365_train_standard.txt: 1 of the 9 listed images "
                                        r"are missing under .*data_256, the first: "
                                        r"b/beach/00000001.jpg"):
        places2_images(*args, 0, 0)
    (places2 / "bad.txt").write_text("/a/abbey/readme.txt 0\n")
    with pytest.raises(DataError, match=r"bad.txt:1: 'a/abbey/readme.txt' is not an image"):
        read_file_list(places2 / "bad.txt")
    with pytest.raises(Exception, match="data.places2.release"):
        places2_images(places2, "512", "x", "y", 0, 0)


def test_a_256px_jpg_is_copied_and_another_size_is_converted(tmp_path: Path) -> None:
    src = tmp_path / "a.jpg"
    cv2.imwrite(str(src), draw_face(32, 0, 0), [cv2.IMWRITE_JPEG_QUALITY, 80])
    convert_listed([("a", src)], tmp_path / "same", 32, quality=95)
    assert (tmp_path / "same" / "a.jpg").read_bytes() == src.read_bytes()
    convert_listed([("a", src)], tmp_path / "smaller", 16, quality=95)
    assert cv2.imread(str(tmp_path / "smaller" / "a.jpg")).shape == (16, 16, 3)


def _same_tree(a: Path, b: Path) -> None:
    """Every file under ``a`` is under ``b`` with the same bytes, and no other."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_preparation_gives_an_unsharded_run_s_files(tmp_path: Path, shards: int) -> None:
    """The folder functions on their own (the preparation before shards existed) and the plan in
    1, 3 or 7 shards then gathered: the same images, masks, corrupted images and pairs CSV."""
    make_demo_dataset(tmp_path / "faces", tmp_path / "strokes", 10, 10, 48, 48, 0)
    whole = tmp_path / "whole"
    convert_images(tmp_path / "faces", whole / "images", 10, 32)
    prepare_masks(tmp_path / "strokes", whole / "masks", 10, 32)
    overlay_masks(whole / "images", whole / "masks", whole / "corrupted", whole / "pairs.csv")

    data = tmp_path / "sharded"
    plan_sources(data / "sources.csv", "folders", 10, tmp_path / "faces", tmp_path / "strokes")
    parts = []
    for k in range(shards):
        part = data / "shards" / str(k)
        convert_shard(data / "sources.csv", part / "images", k, shards, 32)
        masks_shard(data / "sources.csv", part / "masks", k, shards, 32)
        overlay_masks(part / "images", part / "masks", part / "corrupted", part / "pairs.csv")
        parts.append(part)
    gather_shards(parts, data / "sources.csv", data, data / "pairs.csv")
    for folder in ("images", "masks", "corrupted"):
        _same_tree(whole / folder, data / folder)
    assert (whole / "pairs.csv").read_bytes() == (data / "pairs.csv").read_bytes()


def test_shard_blocks_cover_every_rank_once() -> None:
    for n, shards in ((10, 3), (7, 7), (30000, 64), (5, 1)):
        blocks = [shard_block(n, k, shards) for k in range(shards)]
        assert [r for b in blocks for r in b] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(Exception, match="shard 3 of 3"):
        shard_block(10, 3, 3)


def test_a_lost_shard_is_named_by_the_gather(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / "faces", tmp_path / "strokes", 6, 6, 32, 32, 0)
    plan_sources(tmp_path / "sources.csv", "folders", 6, tmp_path / "faces", tmp_path / "strokes")
    parts = [tmp_path / "shards" / str(k) for k in range(2)]
    for k, part in enumerate(parts):
        convert_shard(tmp_path / "sources.csv", part / "images", k, 2, 32)
        masks_shard(tmp_path / "sources.csv", part / "masks", k, 2, 32)
        overlay_masks(part / "images", part / "masks", part / "corrupted", part / "pairs.csv")
    (parts[1] / "pairs.csv").unlink()
    with pytest.raises(DataError, match=r"shards/1/pairs.csv: missing; rerun"):
        gather_shards(parts, tmp_path / "sources.csv", tmp_path / "data", tmp_path / "pairs.csv")
    assert not (tmp_path / "pairs.csv").exists()


def test_the_nvidia_plan_deals_each_split_evenly_and_the_manifest_records_it(
        places2: Path, tmp_path: Path) -> None:
    masks = tmp_path / "nvidia"
    for i in range(24):
        _write(masks / f"{i:05d}.png", draw_nvidia_mask(64, 0, i))
    data = tmp_path / "data"
    plan = plan_sources(data / "sources.csv", "places2", 14, places2, masks,
                        mask_protocol="nvidia", mask_count=24, mask_binary="strict",
                        test=5)
    assert plan["split"].value_counts().to_dict() == {"train": 9, "test": 5}
    for split in ("train", "test"):  # each split's first images: one category after another
        rows = plan[plan["split"] == split]
        assert rows["mask_category"].tolist()[:4] == ["0-10%", "0-10%", "10-20%", "10-20%"]
    part = data / "shards" / "0"
    convert_shard(data / "sources.csv", part / "images", 0, 1, 32)
    masks_shard(data / "sources.csv", part / "masks", 0, 1, 32, mask_binary="strict")
    overlay_masks(part / "images", part / "masks", part / "corrupted", part / "pairs.csv")
    gather_shards([part], data / "sources.csv", data, data / "pairs.csv")
    manifest = make_split(data / "pairs.csv", data / "manifest.csv", "lists", seed=0, val=2)
    assert manifest["split"].value_counts().to_dict() == {"train": 7, "test": 5, "val": 2}
    assert (manifest.loc[manifest["split"] == "test", "id"].str.startswith("Places365_val")).all()
    first = manifest.iloc[0]
    source = cv2.imread(str(data / first["mask_source"]), cv2.IMREAD_GRAYSCALE)
    assert mask_category(source)["mask_category"] == first["mask_category"]


def test_the_lists_scheme_needs_the_data_s_splits(manifest: Path, tmp_path: Path) -> None:
    pairs = manifest.parent / "pairs.csv"
    with pytest.raises(DataError, match="'lists' needs the data's own splits"):
        make_split(pairs, tmp_path / "m.csv", "lists", seed=0)


# --- the workflow: shards, both protocols' configs, the Places2 demo --------------------------

def _data_files(results: Path) -> dict[str, bytes]:
    data = results / "data"
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file()}


@pytest.mark.long
def test_sharded_workflow_writes_the_unsharded_data(tmp_path: Path) -> None:
    """data.shards 1 and 4 through the workflow: every file under data/ equal, byte for byte;
    the four shards ran as four jobs of each stage and their folders are gone."""
    runs = {}
    for shards in (1, 4):
        workdir = tmp_path / f"shards{shards}"
        result = snakemake(workdir, _with(data={"shards": shards}), "--until", "split")
        assert result.returncode == 0, result.stderr[-3000:]
        for rule in ("convert", "masks", "overlay"):
            assert result.stderr.count(f"rule {rule}:") == shards
        results = workdir / TINY["results_dir"]
        assert not (results / "data" / "shards").exists()
        runs[shards] = _data_files(results)
    assert runs[1].keys() == runs[4].keys() and "manifest.csv" in runs[1]
    assert [k for k in runs[1] if runs[1][k] != runs[4][k]] == []


@pytest.mark.long
def test_a_lost_shard_is_prepared_again_alone(tmp_path: Path) -> None:
    config = _with(data={"shards": 3})
    shard = Path(TINY["results_dir"]) / "data" / "shards"
    targets = [str(shard / str(k) / "pairs.csv") for k in range(3)]
    # --notemp: the shards' folders kept as they are while a run is under way (the gather
    # removes them)
    first = snakemake(tmp_path, config, "--notemp", *targets)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(tmp_path / shard / "1" / "images")  # shard 1's images lost (a node died)
    plan = snakemake(tmp_path, config, "-n", "--notemp", "--until", "split")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M))
    assert jobs["convert"] == "1" and jobs["overlay"] == "1" and "masks" not in jobs
    assert "sources" not in jobs and jobs["gather"] == "1"


def test_both_protocols_dry_run_from_their_configs(tmp_path: Path) -> None:
    """configs/paper_celebahq.yaml, and configs/paper_places2.yaml over it, with local paths:
    the whole DAG (Places2: 64 shards of each data stage), no job run."""
    celebahq = yaml.safe_load((ROOT / "configs" / "paper_celebahq.yaml").read_text())
    for key in ("images_dir", "masks_dir"):
        (tmp_path / celebahq["data"][key]).mkdir(parents=True)
    result = snakemake(tmp_path, ROOT / "configs" / "paper_celebahq.yaml", "-n", "--config",
                       *WEIGHTS_ALLOWED_MISSING)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule sources:" in result.stdout and "rule gather:" in result.stdout

    places = yaml.safe_load((ROOT / "configs" / "paper_places2.yaml").read_text())["data"]
    root = tmp_path / places["places2"]["root"]
    root.mkdir(parents=True)
    for listing in (places["places2"]["train_list"], places["places2"]["val_list"]):
        (root / listing).write_text("")
    (tmp_path / places["masks_dir"]).mkdir(parents=True)
    command = ["--configfile", str(ROOT / "configs" / "paper_celebahq.yaml"),
               str(ROOT / "configs" / "paper_places2.yaml"), "--config", *WEIGHTS_ALLOWED_MISSING]
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                             "--directory", str(tmp_path), "-n", *command],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert jobs["convert"] == jobs["masks"] == jobs["overlay"] == str(places["shards"])
    assert jobs["sources"] == jobs["gather"] == "1" and "demo_data" not in jobs
    assert "results/places2/data/sources.csv" in result.stdout


@pytest.mark.parametrize("changes, message", [
    ({"split": {"scheme": "lists", "test": 4}},
     "config key split.scheme: 'lists' takes the dataset's own splits"),
    ({"demo": {**TINY["demo"], "layout": "places2"}},
     "config key split.scheme: Places2 is split by its own lists"),
    ({"data": {**TINY["data"], "source": "places2", "masks_dir": "/tmp",
               "places2": {"root": "/no/places"}}, "split": {"scheme": "lists", "test": 4}},
     "config key data.places2.root: folder '/no/places' does not exist"),
    ({"data": {**TINY["data"], "source": "places2", "masks_dir": "/tmp",
               "places2": {"root": "/tmp", "train_list": "no_such_list.txt"}},
      "split": {"scheme": "lists", "test": 4}},
     "config key data.places2.train_list: file 'no_such_list.txt' does not exist"),
    ({"data": {**TINY["data"], "mask_protocol": "nvdia"}},
     "config key data.mask_protocol: 'nvdia' is not one of ['qd-imd', 'nvidia', 'lama-thin'"),
])
def test_bad_protocol_config_stops_before_any_job(tmp_path: Path, changes: dict,
                                                   message: str) -> None:
    result = snakemake(tmp_path, _with(**changes), "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


@pytest.mark.long
def test_places2_protocol_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The demo variant of the second protocol, tiny: Places2 layout read by its reader,
    NVIDIA-style masks, two shards; the manifest records each pair's mask, category and border,
    the test split is the validation list, and the per-bucket table uses the categories."""
    config = _with(data={"name": "tiny demo (Places2 layout, NVIDIA-style masks)",
                         "mask_protocol": "nvidia", "mask_binary": "strict", "shards": 2},
                   demo={"layout": "places2", "masks": "nvidia"},
                   split={"scheme": "lists", "test": 4, "seed": 0},
                   models=["baseline", "telea"])
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / TINY["results_dir"]
    manifest = pd.read_csv(results / "data" / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    assert test["id"].str.startswith("Places365_val_").all() and len(test) == 4
    assert test["mask_category"].tolist() == ["0-10%", "0-10%", "10-20%", "10-20%"]
    assert test["mask_border"].tolist() == [True, False, True, False]
    buckets = pd.read_csv(results / "metrics" / "baseline" / "buckets.csv")
    assert buckets["bucket"].tolist() == ["0-10%", "10-20%"] and buckets["images"].sum() == 4
    per_image = pd.read_csv(results / "metrics" / "baseline" / "per_image.csv")
    assert per_image["bucket"].tolist() == test["mask_category"].tolist()
    assert "mask_border" in per_image.columns
    benchmark = (results / "tables" / "benchmark.md").read_text()
    assert "measured rows on tiny demo (Places2 layout, NVIDIA-style masks)" in \
        " ".join(benchmark.split())
