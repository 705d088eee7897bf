"""The data plan and its shards: which source image and which source mask make each pair,
decided once (``sources.csv``) so that any number of preparation jobs agree on it; each shard
converts, prepares and overlays one contiguous block of it, and one gather puts the shards'
files where an unsharded run puts them, byte for byte.

Image sources: a folder of PNGs (the demo), CelebA-HQ in any of the layouts it is distributed
in (``data.layout: celebahq``: :func:`celebahq_images`), or Places365-Standard's layout and file
lists (Places2: ``data_256/a/abbey/00000001.jpg`` listed as ``/a/abbey/00000001.jpg 0`` in
``places365_train_standard.txt``; ``val_256/Places365_val_00000001.jpg`` in
``places365_val.txt``; the high-resolution release in ``data_large`` and ``val_large``).
Mask protocols: ``qd-imd``, image of rank i with the i-th mask (sorted), as the seed report did;
``nvidia``, the NVIDIA test set's masks in :func:`~ndmha.data.masks.balanced_order`, dealt to
each split's images in id order from the start of that order (again from its start when a split
has more images than there are masks), so that any split's first k images spread evenly over
the categories; each pair's category and border contact recorded.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ndmha.data.maskgen import FAMILIES
from ndmha.data.masks import balanced_order, nvidia_index
from ndmha.data.prepare import (
    JPG_SUFFIXES,
    PAIRS_COLUMNS,
    convert_listed,
    folder_images,
    prepare_listed,
)
from ndmha.data.split import MASK_COLUMNS
from ndmha.errors import ConfigError, DataError
from ndmha.io import atomic_open, list_images, relative_posix, staged_dir, take_first

log = logging.getLogger("ndmha")

#: CelebA-HQ's images by its index (0-29999), in the layouts it comes in: the official PNGs
#: (``00000.png``, also ``imgHQ00000.png``), CelebAMask-HQ's 1024 px JPGs (``CelebA-HQ-img/0.jpg``)
#: and the 256 px copies (``00000.jpg``, ``0.jpg``): the same id, ``00000``, in every layout
CELEBAHQ_NAME = re.compile(r"(?:imgHQ)?(\d{1,5})")
CELEBAHQ_SIZE = 30000
#: the folder inside a distribution's root that holds the images (CelebAMask-HQ)
CELEBAHQ_SUBFOLDERS = ("CelebA-HQ-img",)
CELEBAHQ_EXPECTED = ("CelebA-HQ's images named by their index: 00000.png ... 29999.png (the "
                     "official PNGs), 0.jpg ... 29999.jpg (CelebAMask-HQ's CelebA-HQ-img), or "
                     "00000.jpg ... (256 px copies)")
#: QD-IMD as distributed: qd_imd/train (the masks the seed report took) and qd_imd/test
QDIMD_TRAIN = "train"

#: Places365-Standard's image folders per release (under data.places2.root)
PLACES2_FOLDERS = {"256": ("data_256", "val_256"), "large": ("data_large", "val_large")}


def read_file_list(path: str | Path) -> list[str]:
    """The image paths of a Places365 file list (``/a/abbey/00000001.jpg 0`` or
    ``Places365_val_00000001.jpg 165``: a path, then an optional label), leading ``/`` dropped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file list not found")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            entry = line.split()[0].lstrip("/")
            if Path(entry).suffix.lower() not in JPG_SUFFIXES + (".png",):
                raise DataError(f"{path}:{number}: {entry!r} is not an image path")
            entries.append(entry)
    if not entries:
        raise DataError(f"{path}: the file list is empty")
    return entries


def places2_id(entry: str) -> str:
    """An image's id from its listed path: ``a/abbey/00000001.jpg`` -> ``a-abbey-00000001``."""
    return Path(entry).with_suffix("").as_posix().replace("/", "-")


def pick(entries: list[str], count: int, seed: int, subset: set[str] | None) -> list[str]:
    """``count`` entries (0: all) of a file list, after keeping only those in ``subset``: a
    seeded random choice, so that a subset of a list sorted by scene class still covers every
    class."""
    if subset is not None:
        entries = [e for e in entries if e in subset]
    if count and count < len(entries):
        chosen = np.random.default_rng(seed).choice(len(entries), size=count, replace=False)
        entries = [entries[i] for i in sorted(chosen)]
    return entries


def places2_images(root: str | Path, release: str = "256",
                   train_list: str | Path = "places365_train_standard.txt",
                   val_list: str | Path = "places365_val.txt", n_train: int = 0, n_test: int = 0,
                   seed: int = 0, subset_list: str | Path | None = None
                   ) -> list[tuple[str, Path, str]]:
    """Places2's ``(id, path, split)``: ``n_train`` images of the training list (split train)
    and ``n_test`` of the validation list (split test, as the inpainting papers score it), each
    a seeded choice (:func:`pick`), 0 meaning all; restricted to the paths of ``subset_list``
    when given. Every chosen file must exist: one error names the list and the first missing."""
    root = Path(root)
    if release not in PLACES2_FOLDERS:
        raise ConfigError(f"data.places2.release: must be one of {sorted(PLACES2_FOLDERS)}, "
                          f"got {release!r}")
    subset = set(read_file_list(root / subset_list)) if subset_list else None
    chosen: list[tuple[str, Path, str]] = []
    for split, folder, listing, count in (("train", PLACES2_FOLDERS[release][0], train_list,
                                           n_train),
                                          ("test", PLACES2_FOLDERS[release][1], val_list,
                                           n_test)):
        listing = root / listing
        entries = pick(read_file_list(listing), count, seed, subset)
        if count and len(entries) < count:
            raise DataError(f"{listing}: lists {len(entries)} images"
                            f"{' in the subset' if subset is not None else ''}, {count} are "
                            "configured")
        missing = [e for e in entries if not (root / folder / e).is_file()]
        if missing:
            raise DataError(f"{listing}: {len(missing)} of the {len(entries)} listed images are "
                            f"missing under {root / folder}, the first: {', '.join(missing[:3])}")
        chosen += [(places2_id(e), root / folder / e, split) for e in entries]
    seen: dict[str, Path] = {}
    for image_id, path, _ in chosen:
        if image_id in seen:
            raise DataError(f"{root}: two images share the id {image_id!r} ({seen[image_id]} "
                            f"and {path})")
        seen[image_id] = path
    return chosen


def celebahq_images(folder: str | Path, n_images: int) -> list[tuple[str, Path]]:
    """The first ``n_images`` of CelebA-HQ by index, as ``(id, path)`` with the id the index in
    five digits, from any of its layouts (:data:`CELEBAHQ_NAME`; CelebAMask-HQ's root is read
    through its ``CelebA-HQ-img``). Two files of one index, or a file named otherwise, stop
    with an error naming them."""
    folder = Path(folder)
    suffixes = (".png", ".jpg", ".jpeg")
    files = list_images(folder, suffixes, "CelebA-HQ images")
    if not files:
        inner = [folder / sub for sub in CELEBAHQ_SUBFOLDERS if (folder / sub).is_dir()]
        if inner:
            log.info("%s: CelebA-HQ's images read from %s", folder, inner[0].name)
            folder, files = inner[0], list_images(inner[0], suffixes, "CelebA-HQ images")
    if not files:
        raise DataError(f"{folder}: no images; expected {CELEBAHQ_EXPECTED}")
    by_index: dict[int, Path] = {}
    strays = []
    for path in files:
        match = CELEBAHQ_NAME.fullmatch(path.stem)
        if not match or int(match.group(1)) >= CELEBAHQ_SIZE:
            strays.append(path)
        elif int(match.group(1)) in by_index:
            raise DataError(f"{folder}: {by_index[int(match.group(1))].name} and {path.name} "
                            f"are both CelebA-HQ image {int(match.group(1))}")
        else:
            by_index[int(match.group(1))] = path
    if strays:
        more = f" and {len(strays) - 1} more" if len(strays) > 1 else ""
        raise DataError(f"{folder}: {strays[0].name}{more} not named as CelebA-HQ's images are; "
                        f"expected {CELEBAHQ_EXPECTED}")
    if len(by_index) < n_images:
        raise DataError(f"{folder}: found {len(by_index)} CelebA-HQ images, but {n_images} are "
                        "configured")
    return [(f"{index:05d}", by_index[index]) for index in sorted(by_index)[:n_images]]


def qdimd_masks(folder: str | Path) -> list[Path]:
    """The masks of a folder, sorted; QD-IMD's folder as distributed (``train/`` and ``test/``
    beside each other, no masks at its top) gives its ``train/`` masks."""
    folder = Path(folder)
    masks = list_images(folder, what="masks")
    if not masks and (folder / QDIMD_TRAIN).is_dir():
        log.info("%s: QD-IMD as distributed: its %s/ masks", folder, QDIMD_TRAIN)
        masks = list_images(folder / QDIMD_TRAIN, what="masks")
    if not masks:
        raise DataError(f"{folder}: no masks; expected mask images (white holes on black, or "
                        f"data.mask_hole: black), or QD-IMD's folder as distributed (with "
                        f"{QDIMD_TRAIN}/ and test/)")
    return masks


def plan_sources(sources_csv: str | Path, source: str, n_images: int, images_dir: str | Path,
                 masks_dir: str | Path, mask_protocol: str = "qd-imd", mask_hole: str = "white",
                 mask_count: int = 0, mask_binary: str = "threshold", border_margin: int = 1,
                 places2: dict[str, Any] | None = None, test: int = 0, threads: int = 1,
                 layout: str = "png") -> pd.DataFrame:
    """Write the plan: one row per image, in the order of its files' names (the ids, sorted), with
    its source image and source mask; Places2 adds each image's split, the ``nvidia`` protocol
    each mask's hole ratio, category and border contact
    (:data:`~ndmha.data.split.MASK_COLUMNS`).

    ``source`` ``folders``: the first ``n_images`` PNGs of ``images_dir`` (``layout: celebahq``:
    the first by CelebA-HQ's index, :func:`celebahq_images`); ``places2``: the
    layout under ``images_dir`` (:func:`places2_images`, with the options of ``places2``),
    ``test`` of its validation list and ``n_images - test`` of its training list."""
    if source == "places2":  # images_dir is its root; data.places2's other keys as given
        options = {k: v for k, v in (places2 or {}).items() if k != "root"}
        images = places2_images(images_dir, n_train=n_images - test, n_test=test, **options)
        # the order of the files' names (<id>.jpg), which every shard's folder sorts into
        images.sort(key=lambda item: f"{item[0]}.jpg")
    elif layout == "celebahq":
        images = [(i, path, "") for i, path in celebahq_images(images_dir, n_images)]
    else:
        images = [(i, path, "") for i, path in folder_images(images_dir, n_images)]
    n = len(images)
    plan = pd.DataFrame({"id": [i for i, _, _ in images]})
    base = Path(sources_csv).resolve().parent
    plan["image"] = [relative_posix(path, base) for _, path, _ in images]
    if mask_protocol == "nvidia":
        index = nvidia_index(masks_dir, mask_hole, border_margin, mask_count, mask_binary,
                             threads)
        order, dealt = balanced_order(index), {}
        picks = []
        for _, _, split in images:  # each split dealt from the start of the order
            picks.append(order[dealt.get(split, 0) % len(order)])
            dealt[split] = dealt.get(split, 0) + 1
        rows = index.iloc[picks].reset_index(drop=True)
        plan["mask"] = [relative_posix(path, base) for path in rows["mask"]]
        for column in MASK_COLUMNS[1:]:
            plan[column] = rows[column].to_numpy()
        if n > len(index):
            log.info("%d images and %d masks: each mask serves %d or %d images", n, len(index),
                     n // len(index), -(-n // len(index)))
    elif mask_protocol == "qd-imd" or mask_protocol in FAMILIES:  # a pack: image i, mask i
        masks = qdimd_masks(masks_dir)
        if mask_count and len(masks) != mask_count:
            raise DataError(f"{masks_dir}: found {len(masks)} masks, data.mask_count says "
                            f"{mask_count}")
        plan["mask"] = [relative_posix(path, base)
                        for path in take_first(masks, n, masks_dir, "masks")]
    else:
        raise ConfigError(f"data.mask_protocol: 'qd-imd', 'nvidia' or a pack "
                          f"({', '.join(FAMILIES)}), not {mask_protocol!r}")
    if source == "places2":
        plan["split"] = [split for _, _, split in images]
    with atomic_open(sources_csv, newline="") as fh:
        plan.to_csv(fh, index=False)
    log.info("planned %d pairs (%s images, %s masks from %s) in %s", n, source, mask_protocol,
             masks_dir, sources_csv)
    return plan


def shard_block(n: int, shard: int, shards: int) -> range:
    """The ranks of shard ``shard`` of ``shards``: contiguous, sizes differing by one at most."""
    if not 0 <= shard < shards:
        raise ConfigError(f"shard {shard} of {shards} does not exist")
    return range(n * shard // shards, n * (shard + 1) // shards)


def read_plan(sources_csv: str | Path) -> pd.DataFrame:
    """The plan with absolute source paths (``image``, ``mask``)."""
    plan = pd.read_csv(sources_csv, dtype={"id": str}, keep_default_na=False)
    base = Path(sources_csv).resolve().parent
    for column in ("image", "mask"):
        plan[column] = [base / p for p in plan[column]]
    return plan


def _fingerprint(rows: pd.DataFrame, column: str) -> dict[str, str]:
    """What a shard's files depend on besides its settings: its rows' ids and sources."""
    text = "\n".join(f"{i}\t{p}" for i, p in zip(rows["id"], rows[column]))
    return {"rows": hashlib.sha256(text.encode()).hexdigest()}


def convert_shard(sources_csv: str | Path, out_dir: str | Path, shard: int, shards: int,
                  size: int, quality: int = 95, threads: int = 1) -> None:
    """Convert the images of one shard of the plan (:func:`~ndmha.data.prepare.convert_listed`)."""
    plan = read_plan(sources_csv)
    rows = plan.iloc[list(shard_block(len(plan), shard, shards))]
    convert_listed(list(zip(rows["id"], rows["image"])), out_dir, size, quality, threads,
                   _fingerprint(rows, "image"))
    log.info("shard %d of %d: converted %d images to %dpx JPG in %s", shard, shards, len(rows),
             size, out_dir)


def masks_shard(sources_csv: str | Path, out_dir: str | Path, shard: int, shards: int,
                size: int, mask_hole: str = "white", mask_binary: str = "threshold",
                threads: int = 1) -> None:
    """Prepare the masks of one shard of the plan, named by rank among all its images
    (:func:`~ndmha.data.prepare.prepare_listed`)."""
    plan = read_plan(sources_csv)
    block = shard_block(len(plan), shard, shards)
    rows = plan.iloc[list(block)]
    prepare_listed(list(zip(block, rows["mask"])), len(plan), out_dir, size, mask_hole, mask_binary,
                   threads, _fingerprint(rows, "mask"))
    log.info("shard %d of %d: prepared %d masks in %s", shard, shards, len(rows), out_dir)


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no bytes copied), a copy where the file system cannot
    link (another device, no hard links)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def gather_shards(shard_dirs: Sequence[str | Path], sources_csv: str | Path,
                  data_dir: str | Path, pairs_csv: str | Path,
                  folders: Sequence[str] = ("images", "masks", "corrupted")) -> None:
    """Put the shards' files into ``data_dir/<folder>`` (hard links, each folder staged and
    renamed when complete) and their pairs into ``pairs_csv`` with the paths an unsharded run
    writes, in rank order; the plan's Places2 split and NVIDIA mask columns are added to each
    pair. Every pair's files must be there: a lost shard is an error naming it."""
    shard_dirs = [Path(d) for d in shard_dirs]
    for d in shard_dirs:
        for folder in (*folders, "pairs.csv"):
            if not (d / folder).exists():
                raise DataError(f"{d / folder}: missing; rerun the workflow to prepare that "
                                "shard again")
    data_dir = Path(data_dir)
    for folder in folders:
        with staged_dir(data_dir / folder, {"shards": [str(d) for d in shard_dirs]}) as stage:
            for d in shard_dirs:
                for src in sorted((d / folder).iterdir()):
                    if src.name.startswith("."):  # Snakemake's timestamp of the shard's folder
                        continue
                    if not (stage / src.name).exists():
                        _link(src, stage / src.name)
    rows: list[dict[str, str]] = []
    for d in shard_dirs:
        with open(d / "pairs.csv", newline="") as fh:
            rows += list(csv.DictReader(fh))
    plan = pd.read_csv(sources_csv, dtype=str, keep_default_na=False)
    if [r["id"] for r in rows] != plan["id"].tolist():
        raise DataError(f"{sources_csv}: the shards' pairs are not the plan's {len(plan)} images "
                        f"(they hold {len(rows)}); rerun the workflow")
    extra = ["split"] if "split" in plan.columns else []
    extra += list(MASK_COLUMNS) if "mask_category" in plan.columns else []
    base = Path(pairs_csv).resolve().parent
    plan_base = Path(sources_csv).resolve().parent
    for row, planned in zip(rows, plan.to_dict("records")):
        for column in extra:
            row[column] = relative_posix(plan_base / planned["mask"], base) \
                if column == "mask_source" else planned[column]
    with atomic_open(pairs_csv, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*PAIRS_COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(rows)
    log.info("gathered %d shards: %d pairs in %s", len(shard_dirs), len(rows), pairs_csv)
