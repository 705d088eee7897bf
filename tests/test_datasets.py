"""The datasets as they come, on generated files: CelebA-HQ's three layouts with the same ids,
CelebA's partition mapped through CelebA-HQ's index, QD-IMD's folders as distributed, and one
error naming the folder for anything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml

from ndmha.config import check_config, compose
from ndmha.study import validate
from ndmha.data.demo import draw_face, draw_mask
from ndmha.data.prepare import convert_listed
from ndmha.data.sources import celebahq_images, plan_sources, qdimd_masks
from ndmha.data.split import celeba_splits, make_split
from ndmha.errors import ConfigError, DataError
from ndmha.io import write_image

from test_workflow import ROOT, WEIGHTS_ALLOWED_MISSING

N = 8


def official(folder: Path, n: int = N, size: int = 64) -> Path:
    """The official release's layout: 00000.png ... as PNGs."""
    for i in range(n):
        write_image(folder / f"{i:05d}.png", draw_face(size, 9, i))
    return folder


def celebamask(root: Path, n: int = N, size: int = 64) -> Path:
    """CelebAMask-HQ's: CelebA-HQ-img/0.jpg ... beside its other folders and its mapping."""
    for i in range(n):
        write_image(root / "CelebA-HQ-img" / f"{i}.jpg", draw_face(size, 9, i))
    (root / "CelebAMask-HQ-mask-anno").mkdir()
    return root


def copies(folder: Path, n: int = N, size: int = 32) -> Path:
    """A 256 px copy's layout (here at 32 px): 00000.jpg ..."""
    for i in range(n):
        write_image(folder / f"{i:05d}.jpg", draw_face(size, 9, i), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return folder


def test_every_layout_gives_the_same_ids_in_index_order(tmp_path: Path) -> None:
    layouts = {"official": official(tmp_path / "png"), "celebamask": celebamask(tmp_path / "cm"),
               "copies": copies(tmp_path / "small")}
    ids = {name: [i for i, _ in celebahq_images(folder, 6)] for name, folder in layouts.items()}
    assert ids["official"] == ids["celebamask"] == ids["copies"] == [f"{i:05d}" for i in range(6)]
    # index order, not name order ("10.jpg" sorts before "7.jpg"); a missing index is skipped
    write_image(tmp_path / "cm" / "CelebA-HQ-img" / "10.jpg", draw_face(64, 9, 10))
    write_image(tmp_path / "cm" / "CelebA-HQ-img" / "9.jpg", draw_face(64, 9, 9))
    assert [i for i, _ in celebahq_images(tmp_path / "cm", 10)][-3:] == ["00007", "00009",
                                                                        "00010"]


def test_a_copy_already_at_the_size_is_copied_not_encoded(tmp_path: Path) -> None:
    folder = copies(tmp_path / "small", size=32)
    images = celebahq_images(folder, 3)
    convert_listed(images, tmp_path / "out", size=32)
    for image_id, source in images:
        assert (tmp_path / "out" / f"{image_id}.jpg").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("names, message", [
    (["00000.png", "face_a.png"], r"face_a.png not named as CelebA-HQ's images are; expected "
                                  r"CelebA-HQ's images named by their index: 00000.png"),
    (["00001.png", "1.jpg"], r"00001.png and 1.jpg are both CelebA-HQ image 1"),
    (["30000.png"], r"30000.png not named as CelebA-HQ's"),
    ([], r"no images; expected CelebA-HQ's images"),
])
def test_a_folder_in_no_layout_is_one_error(names: list[str], message: str,
                                            tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in names:
        write_image(folder / name, draw_face(32, 9, 0))
    with pytest.raises(DataError, match=f"{folder}: {message}"):
        celebahq_images(folder, 1)


def test_too_few_images_names_the_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"found 8 CelebA-HQ images, but 9 are configured"):
        celebahq_images(official(tmp_path / "png"), 9)


def celeba_files(folder: Path, n: int, mapping: str = "image_list") -> tuple[Path, Path]:
    """CelebA-HQ's index (the release's image_list.txt, or CelebAMask-HQ's mapping) onto made-up
    CelebA files, and CelebA's partition of them: HQ image i is CelebA file 100 + 7 i, in
    partition i mod 3 (0 train, 1 val, 2 test)."""
    folder.mkdir(parents=True, exist_ok=True)
    if mapping == "image_list":
        lines = ["idx orig_idx orig_file proc_md5 final_md5"] + [
            f"{i} {99 + 7 * i} {100 + 7 * i:06d}.jpg {'a' * 32} {'b' * 32}" for i in range(n)]
    else:
        lines = ["idx orig_idx orig_file"] + [f"{i} {99 + 7 * i} {100 + 7 * i:06d}.jpg"
                                              for i in range(n)]
    (folder / f"{mapping}.txt").write_text("\n".join(lines) + "\n")
    codes = {f"{100 + 7 * i:06d}.jpg": i % 3 for i in range(n)}  # the rest of CelebA: train
    partition = [f"{j:06d}.jpg {codes.get(f'{j:06d}.jpg', 0)}" for j in range(1, 100 + 7 * n)]
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return folder / f"{mapping}.txt", folder / "list_eval_partition.txt"


@pytest.mark.parametrize("mapping", ["image_list", "CelebA-HQ-to-CelebA-mapping"])
def test_celebas_partition_through_the_index(mapping: str, tmp_path: Path) -> None:
    image_list, partition = celeba_files(tmp_path, 12, mapping)
    labels = celeba_splits([f"{i:05d}" for i in range(12)], image_list, partition)
    assert labels == [("train", "val", "test")[i % 3] for i in range(12)]
    with pytest.raises(DataError, match=f"{image_list}: no line for CelebA-HQ image 12"):
        celeba_splits(["00012"], image_list, partition)
    with pytest.raises(DataError, match="'face' is not a CelebA-HQ index"):
        celeba_splits(["face"], image_list, partition)
    # the mirrored CSV (a header, commas, CRLF line ends) gives the same split
    mirrored = tmp_path / "list_eval_partition.csv"
    mirrored.write_text("image_id,partition\r\n" + "".join(
        line.replace(" ", ",") + "\r\n" for line in partition.read_text().splitlines()))
    ids = [f"{i:05d}" for i in range(12)]
    assert celeba_splits(ids, image_list, mirrored) == labels
    partition.write_text("000100.jpg 7\n")
    with pytest.raises(DataError, match=f"{partition}: line 1 is not '<file> 0|1|2'"):
        celeba_splits(["00000"], image_list, partition)
    mirrored.write_text("image_id,partition\n000100.jpg,7\n")
    with pytest.raises(DataError, match=f"{mirrored}: line 2 is not '<file> 0|1|2' or "
                                        f"'<file>,0|1|2'"):
        celeba_splits(["00000"], image_list, mirrored)


def test_qdimd_as_distributed_gives_its_train_masks(tmp_path: Path) -> None:
    root = tmp_path / "qd_imd"
    for split, count in (("train", 5), ("test", 3)):
        for i in range(count):
            write_image(root / split / f"{i:05d}_{split}.png", draw_mask(64, 2, i))
    masks = qdimd_masks(root)
    assert [p.parent.name for p in masks] == ["train"] * 5 and masks == sorted(masks)
    assert qdimd_masks(root / "test") == sorted((root / "test").iterdir())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no masks; expected mask images .* QD-IMD's "
                                        r"folder as distributed \(with train/ and test/\)"):
        qdimd_masks(tmp_path / "empty")


def test_the_plan_reads_celebamask_and_qdimd_as_they_come(tmp_path: Path) -> None:
    images = celebamask(tmp_path / "CelebAMask-HQ")
    for i in range(N + 2):
        write_image(tmp_path / "qd_imd" / "train" / f"{i:05d}.png", draw_mask(64, 2, i))
    plan = plan_sources(tmp_path / "sources.csv", "folders", N, images, tmp_path / "qd_imd",
                        layout="celebahq")
    assert list(plan["id"]) == [f"{i:05d}" for i in range(N)]
    assert all(p.startswith("CelebAMask-HQ/CelebA-HQ-img/") for p in plan["image"])
    assert list(plan["mask"]) == [f"qd_imd/train/{i:05d}.png" for i in range(N)]


def test_the_celeba_scheme_is_checked_and_runs_through_the_workflow(tmp_path: Path) -> None:
    """The workflow up to its split on CelebAMask-HQ's layout and QD-IMD's folder, split by
    CelebA's partition; the config check names a missing file first."""
    images = celebamask(tmp_path / "CelebAMask-HQ", size=32)
    for i in range(N):
        write_image(tmp_path / "qd_imd" / "train" / f"{i:05d}.png", draw_mask(32, 2, i))
    image_list, partition = celeba_files(tmp_path / "lists", N)
    config = compose(yaml.safe_load((ROOT / "configs" / "paper_celebahq.yaml").read_text()), ROOT)
    config["data"].update(layout="celebahq", images_dir=str(images), n_images=N, image_size=32,
                          masks_dir=str(tmp_path / "qd_imd"))
    config.update(results_dir=str(tmp_path / "results"), models=["telea"])
    config["split"] = {"scheme": "celeba", "seed": 0, "celeba": {
        "image_list": str(image_list), "partition": str(tmp_path / "nope.txt")}}
    validate(config)  # the schema's defaults filled in, as the workflow's study does
    with pytest.raises(ConfigError, match=r"config key split.celeba.partition: file .*nope.txt"):
        check_config(config)
    config["split"]["celeba"]["partition"] = str(partition)
    check_config(config)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
         str(tmp_path), "--cores", "1", "--configfile", str(tmp_path / "c.yaml"), "--config",
         *WEIGHTS_ALLOWED_MISSING, "--until", "split"], capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    manifest = pd.read_csv(tmp_path / "results" / "data" / "manifest.csv", dtype={"id": str})
    assert list(manifest["id"]) == [f"{i:05d}" for i in range(N)]
    assert list(manifest["split"]) == [("train", "val", "test")[i % 3] for i in range(N)]
    again = make_split(tmp_path / "results" / "data" / "pairs.csv", tmp_path / "m.csv", "celeba",
                       seed=5, celeba={"image_list": image_list, "partition": partition})
    assert list(again["split"]) == list(manifest["split"])  # the seed plays no part
