"""Protocol packs (``ndmha.data.packs``) and the ported mask families (``ndmha.data.maskgen``):
the ports against their originals' figures, a pack built and verified, a changed byte caught,
and one set hash whatever the threads and shards."""

from __future__ import annotations

import hashlib
import re
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import PIL
import pytest

from ndmha.data.maskgen import FAMILIES, family_mask
from ndmha.data.packs import build, verify
from ndmha.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "protocol_masks.json").read_text())
#: a bin of the 200-mask hole-ratio histogram may move this many masks from the original's:
#: byte-equal masks move none; a different OpenCV or Pillow may rasterise a stroke's edge
#: otherwise, moving a mask's ratio by a fraction of a percent, across a bin edge only for the
#: few masks that lie within that fraction of one (the thick family has the most edge pixels)
BIN_TOLERANCE = 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_port_draws_its_originals_masks(family: str) -> None:
    """The originals' masks at seeds 0-199 (tests/fixtures/protocol_masks.json, made once from
    their repositories): byte-equal where the drawing libraries are the fixture's versions,
    and the hole-ratio histogram within BIN_TOLERANCE masks a bin on any."""
    figures = FIXTURE["families"][family]
    masks = [family_mask(family, seed) for seed in range(len(figures["sha256_16"]))]
    masks = [np.zeros((256, 256), np.uint8) if m is None else m for m in masks]
    ratios = [float(np.count_nonzero(m)) / m.size for m in masks]
    histogram = np.histogram(ratios, bins=10, range=(0, 1))[0]
    assert np.abs(histogram - figures["hole_ratio_histogram"]).max() <= BIN_TOLERANCE, histogram
    assert set(np.unique(np.concatenate([np.unique(m) for m in masks]))) <= {0, 255}
    made = FIXTURE["made_with"]
    if (made["opencv"], made["pillow"]) == (cv2.__version__, PIL.__version__):
        hashes = [hashlib.sha256(np.ascontiguousarray(m).tobytes()).hexdigest()[:16]
                  for m in masks]
        assert hashes == figures["sha256_16"]


def test_a_pack_is_verified_and_a_changed_byte_is_not(tmp_path: Path) -> None:
    record = build("mat-small", tmp_path / "pack", count=12, threads=2)
    assert verify(tmp_path / "pack")["set_sha256"] == record["set_sha256"]
    assert record["masks"] == 12 and record["left_out"] == []
    mask = tmp_path / "pack" / "masks" / "00003.png"
    data = bytearray(mask.read_bytes())
    data[-13] ^= 0x01  # a byte of the last chunk
    mask.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"00003.png: its bytes differ"):
        verify(tmp_path / "pack")
    # another mask in its place, the manifest's file hash made to agree: the pixels give it away
    other = build("mat-small", tmp_path / "other", count=12)
    (tmp_path / "other" / "masks" / "00004.png").replace(mask)
    manifest = (tmp_path / "pack" / "manifest.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(manifest) if line.startswith("masks/00003.png"))
    fields = manifest[row].split(",")
    fields[1] = hashlib.sha256(mask.read_bytes()).hexdigest()
    manifest[row] = ",".join(fields)
    (tmp_path / "pack" / "manifest.csv").write_text("\n".join(manifest) + "\n")
    with pytest.raises(DataError, match=r"00003.png: its pixels differ"):
        verify(tmp_path / "pack")
    assert other["set_sha256"] == record["set_sha256"]  # the same protocol, the same set


def test_one_set_hash_whatever_the_threads_and_shards(tmp_path: Path) -> None:
    """lama-thick leaves some images out (all five candidates over half missing): the same ones
    in every build."""
    one = build("lama-thick", tmp_path / "one", count=60, threads=1, shards=1)
    many = build("lama-thick", tmp_path / "many", count=60, threads=2, shards=3)
    assert one["set_sha256"] == many["set_sha256"] and one["left_out"] == many["left_out"]
    assert one["masks"] + len(one["left_out"]) == 60
    assert not (tmp_path / "one.partial").exists()
    with pytest.raises(DataError, match="exists"):
        build("lama-thick", tmp_path / "one", count=1)


def test_the_command_builds_and_verifies(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "ndmha", "protocol"]
    built = subprocess.run([*run, "build", "lama-thin", "--out", str(tmp_path / "p"),
                            "--count", "8"], capture_output=True, text=True, cwd=ROOT)
    assert built.returncode == 0, built.stderr
    checked = subprocess.run([*run, "verify", str(tmp_path / "p")], capture_output=True,
                             text=True, cwd=ROOT)
    assert checked.returncode == 0 and "verified" in checked.stdout, checked.stderr
    (tmp_path / "p" / "masks" / "00001.png").unlink()
    broken = subprocess.run([*run, "verify", str(tmp_path / "p")], capture_output=True,
                            text=True, cwd=ROOT)
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines()[-1].endswith(
        "00001.png: listed in the manifest, missing")


def test_the_protocol_card_hashes_the_test_set_as_scored(tmp_path: Path) -> None:
    """A test mask's one changed pixel changes the card's mask hash and nothing else; a
    training mask's changes nothing; the card fits the tables' width."""
    from ndmha.io import write_image
    from ndmha.tables.format import MAX_WIDTH
    from ndmha.tables.protocol import protocol_card, protocol_rows

    rows = []
    for i, split in enumerate(["train", "train", "test", "test"]):
        write_image(tmp_path / "masks" / f"{i}.png", family_mask("mat-small", i))
        rows.append(f"{i:05d},images/{i}.jpg,masks/{i}.png,corrupted/{i}.png,{split},0.2")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,image,mask,corrupted,split,hole_ratio\n" + "\n".join(rows) + "\n")
    facts = {"dataset": "look-alike", "protocol": "none", "split_scheme": "paper",
             "split_seed": 0, "mask_protocol": "mat-small", "mask_hole": "white",
             "image_size": 256}
    summaries = [{"lpips": 0.1, "lpips_net": "alex", "fid": "n/a (weights not found: x)"}]

    def card() -> dict:
        return protocol_card(manifest, summaries, facts)

    before = card()
    assert before["split"]["test"] == 2 and before["split"]["train"] == 2
    assert before["metrics"]["lpips"].endswith("alexnet-owt-7be5be79.pth, SHA-256 7be5be79…")
    assert "n/a, weights missing" in before["metrics"]["fid, kid"]
    assert max(len(f"| {k} | {v} |") for k, v in protocol_rows(before)) <= MAX_WIDTH
    for index, changes in ((0, False), (3, True)):
        mask = cv2.imread(str(tmp_path / "masks" / f"{index}.png"), cv2.IMREAD_GRAYSCALE)
        mask[0, 0] = 255 - mask[0, 0]
        write_image(tmp_path / "masks" / f"{index}.png", mask)
        after = card()
        assert after["split"] == before["split"]
        assert (after["masks"]["test_set_sha256"] != before["masks"]["test_set_sha256"]) is changes


def test_a_split_by_listed_ids(tmp_path: Path) -> None:
    """split.scheme ids: the listed ids test (LaMa's file names, or indices, as numbers), the
    rest train; a list that names none of the images is one error naming the file."""
    from ndmha.data.split import listed_ids, make_split

    listing = tmp_path / "ids.txt"
    listing.write_text("# LaMa's names\n00003.jpg\n7\n\n12\n")
    ids = [f"{i:05d}" for i in range(10)]
    assert listed_ids(ids, listing) == ["test" if i in (3, 7) else "train" for i in range(10)]
    rows = "\n".join(f"{i},images/{i}.jpg,masks/{i}.png,corrupted/{i}.png,0.2" for i in ids)
    (tmp_path / "pairs.csv").write_text("id,image,mask,corrupted,hole_ratio\n" + rows + "\n")
    manifest = make_split(tmp_path / "pairs.csv", tmp_path / "manifest.csv", "ids", seed=0,
                          test_ids=listing)
    assert sorted(manifest.loc[manifest["split"] == "test", "id"]) == ["00003", "00007"]
    listing.write_text("20000\n")
    with pytest.raises(DataError, match=r"ids.txt: none of its 1 ids is among the 10 images"):
        listed_ids(ids, listing)
    shipped = ROOT / "workflow" / "resources" / "protocols" / "lama_celebahq_test_ids.txt"
    lama = listed_ids([f"{i:05d}" for i in range(30000)], shipped)
    assert lama.count("test") == 2000


def test_a_protocol_config_draws_its_pack_before_the_plan(tmp_path: Path) -> None:
    """configs/protocols/lama-thick.yaml with a user's folders: the DAG has the pack rule, its
    masks, not data.masks_dir's, feed the plan; a pack's masks are white in their holes."""
    from test_workflow import WEIGHTS_ALLOWED_MISSING, _dry_run

    (tmp_path / "faces").mkdir()
    data = f"data={{images_dir: {tmp_path / 'faces'}, masks_dir: '', n_images: 40}}"
    ids = ROOT / "workflow" / "resources" / "protocols" / "lama_celebahq_test_ids.txt"
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "protocols" /
                                                    "lama-thick.yaml"),
                      "--config", data, f"split={{test_ids: {ids}}}", "models=[telea]",
                      *WEIGHTS_ALLOWED_MISSING)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^pack\s+1$", result.stdout, re.M), result.stdout[-1500:]
    black = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "protocols" /
                                                   "lama-thick.yaml"), "--config",
                     data.replace("n_images: 40", "n_images: 40, mask_hole: black"),
                     f"split={{test_ids: {ids}}}", "models=[telea]", *WEIGHTS_ALLOWED_MISSING)
    assert black.returncode != 0
    assert "config key data.mask_hole: a protocol pack's masks (lama-thick) are white" in \
        black.stdout + black.stderr
