"""Seeded, deterministic train/val/test split written as a manifest CSV."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ndmha.errors import ConfigError, DataError
from ndmha.io import atomic_open, relative_posix

log = logging.getLogger("ndmha")

MANIFEST_COLUMNS = ["id", "image", "mask", "corrupted", "split", "hole_ratio"]
#: the NVIDIA protocol's columns (ndmha.data.sources), kept when the pairs have them
MASK_COLUMNS = ["mask_source", "mask_hole_ratio", "mask_category", "mask_border"]
SPLITS = ("train", "val", "test")
#: CelebA's list_eval_partition.txt (or .csv): 0 train, 1 val, 2 test
CELEBA_PARTITION = {"0": "train", "1": "val", "2": "test"}
REPORT_FRACTIONS = (0.6, 0.2, 0.2)


def split_sizes(n_images: int, scheme: str, test: int | None = None,
                val: int = 0) -> dict[str, int]:
    """Image counts per split.

    ``paper``: ``test`` images held out, the rest train (27,000 / 3,000 on CelebA-HQ); ``val``
    more held out of the training images for validation (0: none, the paper's protocol; then the
    training curves monitor the test split). The test images are the same whatever ``val`` is
    (:func:`assign_splits` cuts test first).
    ``report``: the seed report's 60 / 20 / 20 train / val / test.
    """
    if scheme == "paper":
        if test is None or not 0 < test < n_images:
            raise ConfigError(f"split.test: must be between 1 and data.n_images - 1 "
                              f"({n_images - 1}), got {test}")
        if not 0 <= val < n_images - test:
            raise ConfigError(f"split.val: {val} validation and {test} test images leave none "
                              f"to train on (data.n_images is {n_images})")
        return {"train": n_images - test - val, "val": val, "test": test}
    if scheme == "report":
        val = int(round(n_images * REPORT_FRACTIONS[1]))
        test_n = int(round(n_images * REPORT_FRACTIONS[2]))
        if min(val, test_n, n_images - val - test_n) < 1:
            raise ConfigError(f"split.scheme: 'report' (60/20/20) needs at least 5 images, "
                              f"data.n_images is {n_images}")
        return {"train": n_images - val - test_n, "val": val, "test": test_n}
    raise ConfigError(f"split.scheme: must be 'paper', 'report', 'lists' or 'celeba', got "
                      f"{scheme!r}")


def assign_splits(ids: list[str], sizes: dict[str, int], seed: int) -> list[str]:
    """Split label for each id: a seeded permutation cut into test, val, then train."""
    if sum(sizes.values()) != len(ids):
        raise ConfigError(f"split sizes {sizes} add up to {sum(sizes.values())}, "
                          f"but there are {len(ids)} images")
    order = np.random.default_rng(seed).permutation(len(ids))
    labels = np.empty(len(ids), dtype=object)
    start = 0
    for name in ("test", "val", "train"):
        labels[order[start:start + sizes[name]]] = name
        start += sizes[name]
    return labels.tolist()


def listed_splits(given: list[str], val: int, seed: int) -> list[str]:
    """The ``lists`` scheme: each image's split as its dataset gives it (Places2: its training
    list -> train, its validation list -> test), ``val`` of the training images held out for
    validation by a seeded permutation."""
    labels = list(given)
    unknown = sorted(set(labels) - {"train", "test"})
    if unknown or "test" not in labels:
        raise DataError(f"split.scheme 'lists': the data give splits {sorted(set(labels))}; "
                        "a train and a test split are needed (data.source: places2)")
    train = [i for i, label in enumerate(labels) if label == "train"]
    if not 0 <= val < len(train):
        raise ConfigError(f"split.val: {val} validation images leave none of the "
                          f"{len(train)} training images to train on")
    for j in np.random.default_rng(seed).permutation(len(train))[:val]:
        labels[train[j]] = "val"
    return labels


def _rows(path: Path, what: str, separator: str | None = None) -> list[list[str]]:
    """The fields of each non-empty line, split at white space (and ``separator``)."""
    try:
        return [(line.replace(separator, " ") if separator else line).split()
                for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as error:
        raise DataError(f"{path}: cannot read {what} ({error.strerror})") from error


def read_celebahq_index(path: str | Path) -> dict[int, str]:
    """CelebA-HQ's index: its image number -> CelebA's file name, from the progressive-GAN
    release's ``image_list.txt`` (``idx orig_idx orig_file proc_md5 final_md5``) or
    CelebAMask-HQ's ``CelebA-HQ-to-CelebA-mapping.txt`` (``idx orig_idx orig_file``)."""
    rows = _rows(Path(path), "CelebA-HQ's index")
    if rows and rows[0][0] == "idx":
        rows = rows[1:]
    index = {}
    for number, row in enumerate(rows, start=2):
        if len(row) < 3 or not row[0].isdigit():
            raise DataError(f"{path}: line {number} is not 'idx orig_idx orig_file ...' "
                            f"(CelebA-HQ's image_list.txt): {' '.join(row)[:80]!r}")
        index[int(row[0])] = row[2]
    return index


def read_celeba_partition(path: str | Path) -> dict[str, str]:
    """CelebA's partition: file name -> train / val / test (0 / 1 / 2), from the original
    ``list_eval_partition.txt`` (``000001.jpg 0``) or the widely mirrored
    ``list_eval_partition.csv`` (an ``image_id,partition`` header, then ``000001.jpg,0``)."""
    parts = {}
    rows = _rows(Path(path), "CelebA's partition", separator=",")
    first = 1
    if rows and rows[0] == ["image_id", "partition"]:
        rows, first = rows[1:], 2
    for number, row in enumerate(rows, start=first):
        if len(row) != 2 or row[1] not in CELEBA_PARTITION:
            raise DataError(f"{path}: line {number} is not '<file> 0|1|2' or '<file>,0|1|2' "
                            f"(CelebA's list_eval_partition.txt or .csv): "
                            f"{' '.join(row)[:80]!r}")
        parts[row[0]] = CELEBA_PARTITION[row[1]]
    return parts


def celeba_splits(ids: list[str], image_list: str | Path, partition: str | Path) -> list[str]:
    """Each CelebA-HQ image's split in CelebA's own partition, mapped through CelebA-HQ's
    index (the split much later work uses: 24,183 / 2,993 / 2,824 of the 30,000)."""
    index, parts = read_celebahq_index(image_list), read_celeba_partition(partition)
    labels = []
    for image_id in ids:
        if not str(image_id).isdigit():
            raise DataError(f"{image_list}: id {image_id!r} is not a CelebA-HQ index "
                            "(data.layout: celebahq names the images by it)")
        if int(image_id) not in index:
            raise DataError(f"{image_list}: no line for CelebA-HQ image {int(image_id)}")
        name = index[int(image_id)]
        if name not in parts:
            raise DataError(f"{partition}: no line for {name} (CelebA-HQ image "
                            f"{int(image_id)})")
        labels.append(parts[name])
    return labels


def listed_ids(ids: list[str], listing: str | Path) -> list[str]:
    """``test`` for the ids a file lists, ``train`` for the others. A line is an id or a file
    name whose stem is one (LaMa's ``25531.jpg``), compared as numbers where both are (CelebA-HQ's
    ``25531`` is the image ``25531``); blank lines and ``#`` comments are skipped. None of the
    images listed is an error naming the file."""
    listing = Path(listing)
    try:
        lines = listing.read_text().splitlines()
    except OSError as error:
        raise DataError(f"{listing}: {error.strerror}") from error

    def key(value: str) -> str:
        value = Path(value.strip()).stem
        return str(int(value)) if value.isdigit() else value

    wanted = {key(line) for line in lines if line.strip() and not line.lstrip().startswith("#")}
    splits = ["test" if key(i) in wanted else "train" for i in ids]
    if "test" not in splits:
        raise DataError(f"{listing}: none of its {len(wanted)} ids is among the {len(ids)} images "
                        f"(ids {ids[0]} to {ids[-1]})")
    return splits


def make_split(pairs_csv: str | Path, manifest_csv: str | Path, scheme: str, seed: int,
               test: int | None = None, val: int = 0,
               celeba: dict[str, str] | None = None, test_ids: str | Path = ""
               ) -> pd.DataFrame:
    """Read the pairs CSV, assign splits and write the manifest (id, image, mask, corrupted,
    split, hole_ratio, and the mask protocol's columns when the pairs have them). ``lists``
    keeps the pairs' own ``split`` column (:func:`listed_splits`); ``celeba`` takes CelebA's
    partition through CelebA-HQ's index (``celeba``: its ``image_list`` and ``partition``
    files, :func:`celeba_splits`); ``ids`` tests the ids ``test_ids`` lists
    (:func:`listed_ids`)."""
    pairs = pd.read_csv(pairs_csv, dtype={"id": str})
    if pairs.empty:
        raise DataError(f"{pairs_csv}: no image/mask pairs")
    pairs = pairs.sort_values("id", kind="stable").reset_index(drop=True)
    if scheme == "lists":
        if "split" not in pairs.columns:
            raise DataError(f"{pairs_csv}: split.scheme 'lists' needs the data's own splits "
                            "(data.source: places2)")
        pairs["split"] = listed_splits(pairs["split"].tolist(), val, seed)
        sizes = pairs["split"].value_counts().to_dict()
    elif scheme == "ids":
        pairs["split"] = listed_ids(pairs["id"].tolist(), test_ids)
        sizes = pairs["split"].value_counts().to_dict()
    elif scheme == "celeba":
        celeba = celeba or {}
        pairs["split"] = celeba_splits(pairs["id"].tolist(), celeba.get("image_list", ""),
                                       celeba.get("partition", ""))
        sizes = pairs["split"].value_counts().to_dict()
    else:
        sizes = split_sizes(len(pairs), scheme, test, val)
        pairs["split"] = assign_splits(pairs["id"].tolist(), sizes, seed)
    manifest = pairs[MANIFEST_COLUMNS + [c for c in MASK_COLUMNS if c in pairs.columns]].copy()
    # Paths in the pairs CSV are relative to its folder; rebase them onto the manifest's folder.
    src, dst = Path(pairs_csv).resolve().parent, Path(manifest_csv).resolve().parent
    if src != dst:
        for column in ("image", "mask", "corrupted", "mask_source"):
            if column in manifest.columns:
                manifest[column] = [relative_posix(src / p, dst) for p in manifest[column]]
    with atomic_open(manifest_csv, newline="") as fh:
        manifest.to_csv(fh, index=False)
    log.info("split %d images (%s, seed %d): %s", len(manifest), scheme, seed, sizes)
    return manifest


def read_manifest(manifest_csv: str | Path, split: str | None = None) -> pd.DataFrame:
    """The manifest with absolute paths, optionally restricted to one split."""
    manifest_csv = Path(manifest_csv)
    frame = pd.read_csv(manifest_csv, dtype={"id": str})
    missing = set(MANIFEST_COLUMNS) - set(frame.columns)
    if missing:
        raise DataError(f"{manifest_csv}: missing columns {sorted(missing)}")
    base = manifest_csv.resolve().parent
    for column in ("image", "mask", "corrupted", "mask_source"):
        if column in frame.columns:
            frame[column] = [str(base / p) for p in frame[column]]
    if split is not None:
        frame = frame[frame["split"] == split].reset_index(drop=True)
    return frame
