"""Protocol packs: the mask sets later papers compare on, built the same everywhere and
checkable by anyone.

A pack is a folder:

- ``masks/00000.png`` ...: mask ``i`` of the family at seed ``seed + i``, 8-bit, 255 in the holes
  (:mod:`ndmha.data.maskgen`); LaMa's generator leaves an image out now and then (all five
  candidates over half missing), and so does the pack: its number is in ``left_out``;
- ``manifest.csv``: each mask's file, the SHA-256 of its file, of its pixels, and its hole ratio;
- ``protocol.json``: the protocol (family, generator, its original's repository and commit,
  resolution, seeds, polarity), the counts, and ``set_sha256``: one hash of the whole set, over
  the masks' pixels, so that it is the same on any machine, thread count or shard count (a PNG's
  bytes may differ between zlib builds; its pixels do not).

:func:`verify` checks a pack someone else built or downloaded: every file against the manifest
(a changed byte fails), the set hash, and every mask against the generator at its seed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ndmha.data.maskgen import FAMILIES, SIZE, family_mask
from ndmha.errors import DataError
from ndmha.hashing import set_sha256, sha256_buffer, sha256_file
from ndmha.io import atomic_open, map_parallel, read_image, write_image, write_json

log = logging.getLogger("ndmha")

#: where each family comes from (the repository and commit its port was checked against:
#: tests/fixtures/protocol_masks.json)
ORIGINS = {
    "lama": {"repository": "advimman/lama", "commit": "786f5936b27fb3dacd2b1ad799e4de968ea697e7",
             "generator": "bin/gen_mask_dataset.py, configs/data_gen/random_{family}_256.yaml"},
    "mat": {"repository": "fenglinglwb/MAT", "commit": "d273d891ecdad2e1df106516423a75bc45b2d800",
            "generator": "datasets/mask_generator_256{_small}.py, RandomMask(256)"},
}
#: the packs by name: the family, its first seed, and the masks a set holds by default (MAT's
#: 2,993: CelebA-HQ's test images through CelebA's partition)
PROTOCOLS = {name: {"family": name, "seed": 0, "count": 2993} for name in FAMILIES}
MANIFEST_COLUMNS = ["file", "file_sha256", "pixels_sha256", "hole_ratio"]


def pixels_sha256(mask: np.ndarray) -> str:
    return sha256_buffer(np.ascontiguousarray(mask, np.uint8))


def pack_sha256(manifest: pd.DataFrame) -> str:
    """One hash of a pack: its files' names and pixel hashes (:func:`ndmha.hashing.set_sha256`)."""
    return set_sha256(zip(manifest["file"], manifest["pixels_sha256"]))


def _shard(job: tuple[str, int, list[int], str, int]) -> list[dict[str, Any]]:
    """The masks of one shard (indices), each written atomically; their manifest rows."""
    name, seed, indices, folder, threads = job

    def one(i: int) -> dict[str, Any] | None:
        mask = family_mask(name, seed + i)
        if mask is None:
            return None
        path = Path(folder) / f"{i:05d}.png"
        write_image(path, mask)
        return {"index": i, "file": f"masks/{path.name}", "file_sha256": sha256_file(path),
                "pixels_sha256": pixels_sha256(mask),
                "hole_ratio": round(float(np.count_nonzero(mask)) / mask.size, 6)}

    rows = map_parallel(one, indices, threads, f"{name} masks")
    return [r for r in rows if r is not None]


def build(name: str, out: str | Path, count: int | None = None, threads: int = 1,
          shards: int = 1) -> dict[str, Any]:
    """Build protocol ``name``'s pack in ``out`` (which must not exist): ``count`` masks
    (default the protocol's), drawn on ``threads`` threads in each of ``shards`` processes.
    Written under ``<out>.partial`` and renamed at the end: a stopped build leaves no pack."""
    if name not in PROTOCOLS:
        raise DataError(f"protocol '{name}': not one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    count = protocol["count"] if count is None else count
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: exists; a pack is built into a new folder")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "masks").mkdir(parents=True)
    parts = [list(range(count))[k::shards] for k in range(max(1, shards))]
    jobs = [(name, protocol["seed"], part, str(partial / "masks"), threads) for part in parts]
    if shards > 1:
        with ProcessPoolExecutor(shards) as pool:
            rows = [row for part in pool.map(_shard, jobs) for row in part]
    else:
        rows = _shard(jobs[0])
    manifest = pd.DataFrame(sorted(rows, key=lambda r: r["index"]))[MANIFEST_COLUMNS]
    with atomic_open(partial / "manifest.csv") as fh:
        manifest.to_csv(fh, index=False)
    family = protocol["family"]
    record = {
        "protocol": name, "family": family, "origin": ORIGINS[family.split("-")[0]],
        "resolution": SIZE, "first_seed": protocol["seed"],
        "seeds": "mask i: numpy.random.RandomState(first_seed + i), as np.random.seed before "
                 "the original generator",
        "polarity": "255 = hole, 0 = kept (8-bit PNG)", "count": count, "masks": len(manifest),
        "left_out": sorted(set(range(count)) - {int(f[6:11]) for f in manifest["file"]}),
        "mean_hole_ratio": round(float(manifest["hole_ratio"].mean()), 6),
        "set_sha256": pack_sha256(manifest)}
    write_json(partial / "protocol.json", record)
    os.replace(partial, out)
    log.info("protocol %s: %d masks in %s, set %s", name, len(manifest), out,
             record["set_sha256"][:16])
    return record


def verify(folder: str | Path, threads: int = 1) -> dict[str, Any]:
    """Check a pack: its manifest against its files (bytes and pixels), nothing extra or
    missing, its set hash, and each mask against the generator at its seed. Returns its
    protocol.json; the first problem raises :class:`DataError` naming the file."""
    folder = Path(folder)
    try:
        record = json.loads((folder / "protocol.json").read_text())
        manifest = pd.read_csv(folder / "manifest.csv", dtype=str)
    except (OSError, ValueError) as error:
        raise DataError(f"{folder}: not a protocol pack ({error})") from error
    name = record.get("protocol")
    if name not in PROTOCOLS:
        raise DataError(f"{folder / 'protocol.json'}: protocol {name!r} is not one of "
                        f"{sorted(PROTOCOLS)}")
    listed = set(manifest["file"])
    if not (folder / "masks").is_dir():
        raise DataError(f"{folder / 'masks'}: missing (a pack keeps its masks there)")
    present = {f"masks/{p.name}" for p in (folder / "masks").iterdir()}
    for extra in sorted(present - listed)[:1]:
        raise DataError(f"{folder / extra}: not in the manifest")
    for missing in sorted(listed - present)[:1]:
        raise DataError(f"{folder / missing}: listed in the manifest, missing")

    def check(row: Any) -> None:
        path = folder / row.file
        if sha256_file(path) != row.file_sha256:
            raise DataError(f"{path}: its bytes differ from the manifest's SHA-256")
        mask = read_image(path, cv2.IMREAD_GRAYSCALE)
        if pixels_sha256(mask) != row.pixels_sha256:
            raise DataError(f"{path}: its pixels differ from the manifest's")
        expected = family_mask(name, record["first_seed"] + int(Path(row.file).stem))
        if expected is None or pixels_sha256(expected) != row.pixels_sha256:
            raise DataError(f"{path}: not {name}'s mask at its seed")

    map_parallel(check, list(manifest.itertuples()), threads, f"verify {name}")
    if pack_sha256(manifest) != record.get("set_sha256"):
        raise DataError(f"{folder / 'protocol.json'}: set_sha256 differs from the manifest's")
    return record
