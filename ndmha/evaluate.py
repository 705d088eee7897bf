"""Test-split inference and per-image metrics.

:func:`predict` writes, per test image, the raw network output (``raw/<id>.png``) and the composite
(``composite/<id>.png``: prediction inside the holes, the input elsewhere), plus ``predict.json``
with the inference time per image (batch 1, after warm-up, synchronised on GPU, median).
:func:`predict_training_free` writes the same for a method that learns nothing (the floor).
:func:`score` reads those PNGs back and compares the composites with the ground-truth JPGs.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import pandas as pd
import torch
from tqdm import tqdm

from ndmha import classical
from ndmha.data.dataset import InpaintingDataset, to_image, to_tensor
from ndmha.data.masks import BUCKETS, hole_buckets, to_holes

from ndmha.data.split import read_manifest
from ndmha.fidelity import (
    FID_KEY,
    LPIPSMetric,
    clean_features,
    clean_fid,
    fid_kid,
    inception_features,
    lpips_metric,
    metric_weights,
)
from ndmha.errors import ConfigError, DataError
from ndmha.io import atomic_open, read_image, staged_dir, write_image, write_json
from ndmha.metrics import composite, image_metrics
from ndmha.models import count_parameters
from ndmha.devices import device_name, resolve_device
from ndmha.provenance import collect
from ndmha.model_files import load_model

log = logging.getLogger("ndmha")

WARMUP = 2


@torch.inference_mode()
def predict(manifest: str | Path, model_path: str | Path, out_dir: str | Path,
            split: str = "test", device: str = "auto", experiment: str | None = None
            ) -> dict[str, Any]:
    """Inpaint every image of ``split``; write raw outputs, composites and ``predict.json`` (the
    inference time, and what the model file says of its kind, budget and provenance; the
    experiment's name is ``experiment``'s when given, the workflow's, else the file's)."""
    began_all = time.perf_counter()
    dev = resolve_device(device)
    meta, model = load_model(model_path, dev)
    dataset = InpaintingDataset(manifest, split)
    if len(dataset) == 0:
        raise ValueError(f"{manifest}: the {split} split is empty")
    timings: list[float] = []
    with staged_dir(out_dir, {"model": str(Path(model_path).resolve()), "split": split}) as stage:
        for index in tqdm(range(len(dataset)), desc="predict", mininterval=5.0, file=sys.stderr):
            item = dataset[index]
            image, mask = item["image"][None].to(dev), item["mask"][None].to(dev)
            if index == 0:
                for _ in range(WARMUP):
                    model(image, mask)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            began = time.perf_counter()
            pred = model(image, mask)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            timings.append(time.perf_counter() - began)
            write_image(stage / "raw" / f"{item['id']}.png", to_image(pred[0]))
            write_image(stage / "composite" / f"{item['id']}.png",
                        to_image(composite(pred, image, mask)[0]))
        info = {
            "experiment": experiment or meta["experiment"],
            "architecture": meta["architecture"],
            "kind": meta.get("kind", "trained"),
            "options": meta.get("options", {}),
            "split": split,
            "images": len(dataset),
            "parameters": count_parameters(model),
            "inference_s_per_image": statistics.median(timings),
            "device": device_name(dev),
            "warnings": meta.get("warnings", []),
            "budget": meta.get("budget", {}),
            "test_loss": meta.get("test_loss"),
            "train_provenance": meta.get("provenance", {}),
            "predict_seconds": round(time.perf_counter() - began_all, 3),
        }
        if "source_budget" in meta:  # an imported model.pt: what it had been trained for
            info["source_budget"] = meta["source_budget"]
        write_json(stage / "predict.json", info)
    log.info("predicted %d %s images in %s (median %.4f s/image on %s)", len(dataset), split,
             out_dir, info["inference_s_per_image"], info["device"])
    return info


def predict_training_free(manifest: str | Path, experiment: str, architecture: str,
                          options: dict[str, Any], out_dir: str | Path,
                          split: str = "test") -> dict[str, Any]:
    """Inpaint every image of ``split`` with a training-free method of :mod:`ndmha.classical`:
    the same files as :func:`predict` (``raw/`` the method's output, ``composite/`` its pixels
    in the holes only), timed per image on the CPU; the budget is empty (nothing is trained)."""
    began_all = time.perf_counter()
    frame = read_manifest(manifest, split)
    if len(frame) == 0:
        raise ValueError(f"{manifest}: the {split} split is empty")
    timings: list[float] = []
    settings = {"experiment": experiment, "architecture": architecture, "options": options}
    with staged_dir(out_dir, {**settings, "split": split}) as stage:
        for row in tqdm(frame.itertuples(), total=len(frame), desc=f"predict ({architecture})",
                        mininterval=5.0, file=sys.stderr):
            corrupted = read_image(row.corrupted)
            holes = read_image(row.mask, cv2.IMREAD_GRAYSCALE)
            began = time.perf_counter()
            filled = classical.fill(architecture, corrupted, holes, options)
            timings.append(time.perf_counter() - began)
            write_image(stage / "raw" / f"{row.id}.png", filled)
            write_image(stage / "composite" / f"{row.id}.png",
                        classical.composite(filled, corrupted, holes))
        info = {
            "experiment": experiment,
            "architecture": architecture,
            "kind": "training-free",
            "options": options,
            "split": split,
            "images": len(frame),
            "parameters": 0,
            "inference_s_per_image": statistics.median(timings),
            "device": device_name(torch.device("cpu")),
            "warnings": [],
            "budget": {},
            "test_loss": None,
            "train_provenance": collect(torch.device("cpu"), settings, manifest),
            "predict_seconds": round(time.perf_counter() - began_all, 3),
        }
        write_json(stage / "predict.json", info)
    log.info("%s (%s, training-free) filled %d %s images in %s (median %.4f s/image)",
             experiment, architecture, len(frame), split, out_dir,
             info["inference_s_per_image"])
    return info


def floor_psnr(manifest: str | Path, split: str, architecture: str,
               options: dict[str, Any] | None = None) -> float:
    """The mean PSNR of a training-free method's composites on ``split`` (the floor on a split
    the workflow does not predict, e.g. the validation split the curves monitor)."""
    frame = read_manifest(manifest, split)
    values = []
    for row in frame.itertuples():
        corrupted, holes = read_image(row.corrupted), read_image(row.mask, cv2.IMREAD_GRAYSCALE)
        filled = classical.composite(classical.fill(architecture, corrupted, holes, options),
                                     corrupted, holes)
        values.append(float(image_metrics(to_tensor(filled)[None],
                                          to_tensor(read_image(row.image))[None])["psnr"][0]))
    return statistics.fmean(values)


#: ``predictions.interpolation`` -> OpenCV's flag, for another method's outputs of another size
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
                  "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                  "lanczos": cv2.INTER_LANCZOS4}


def predict_external(manifest: str | Path, out_dir: str | Path, experiment: str,
                     predictions: dict[str, Any], split: str = "test") -> dict[str, Any]:
    """Another method's outputs on our test split (``predictions``: ``dir``, ``pattern`` with
    ``{id}``, ``composited``, ``interpolation``) as the same files as :func:`predict`: ``raw/``
    the method's image (resized to our image size when it differs, with a warning counting
    them), ``composite/`` its pixels in our holes and the input elsewhere, or the image itself
    when ``composited`` says it already is. A missing id is one error naming it and the count."""
    began = time.perf_counter()
    frame = read_manifest(manifest, split)
    folder, pattern = Path(predictions["dir"]), predictions["pattern"]
    key = f"experiments.{experiment}.predictions"
    files = [folder / pattern.format(id=i) for i in frame["id"]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{key}: no prediction for test id {missing[0].name} in {folder} "
                        f"({len(missing)} of the {len(files)} {split} ids missing)")
    interpolation = INTERPOLATIONS[predictions["interpolation"]]
    resized = 0
    with staged_dir(out_dir, {"experiment": experiment, "split": split,
                              "predictions": predictions}) as stage:
        for row, path in zip(frame.itertuples(), tqdm(files, desc=f"import ({experiment})",
                                                      mininterval=5.0, file=sys.stderr)):
            corrupted = read_image(row.corrupted)
            holes = read_image(row.mask, cv2.IMREAD_GRAYSCALE)
            image = read_image(path)
            if image.shape[:2] != corrupted.shape[:2]:
                resized += 1
                image = cv2.resize(image, corrupted.shape[1::-1], interpolation=interpolation)
            write_image(stage / "raw" / f"{row.id}.png", image)
            write_image(stage / "composite" / f"{row.id}.png",
                        image if predictions["composited"]
                        else classical.composite(image, corrupted, holes))
        warnings = ([f"{resized} of {len(files)} predictions resized to "
                     f"{corrupted.shape[1]}x{corrupted.shape[0]} ({predictions['interpolation']})"]
                    if resized else [])
        for warning in warnings:
            log.warning("%s: %s", experiment, warning)
        settings = {"experiment": experiment, "predictions": predictions}
        info = {"experiment": experiment, "architecture": "external", "kind": "external",
                "options": {}, "split": split, "images": len(frame), "parameters": 0,
                "inference_s_per_image": None, "device": "not measured here",
                "warnings": warnings, "budget": {}, "test_loss": None,
                "train_provenance": collect(torch.device("cpu"), settings, manifest),
                "predict_seconds": round(time.perf_counter() - began, 3)}
        write_json(stage / "predict.json", info)
    return info


#: export-test's layouts: where each writes the corrupted input and the mask (255 = hole,
#: unless the layout's mask is inverted), and whether it writes the ground truth too
EXPORT_LAYOUTS = {
    "lama": {"input": "{id}.png", "mask": "{id}_mask.png", "inverted": False, "target": None},
    "mat": {"input": "image/{id}.png", "mask": "mask/{id}.png", "inverted": True,
            "target": None},
    "release": {"input": "input/{id}.png", "mask": "mask/{id}.png", "inverted": False,
                "target": "target/{id}.png"},
}


def export_test(manifest: str | Path, out: str | Path, layout: str = "lama",
                split: str = "test") -> int:
    """The split's images and masks where another codebase reads them, so that it runs on
    exactly our masks. Every layout gives the corrupted image (holes black: another method never
    sees the ground truth in a hole) and the mask: ``lama`` ``<id>.png`` beside ``<id>_mask.png``
    (255 = hole: LaMa's ``predict.py``, and the generic pair most codebases read); ``mat``
    ``image/<id>.png`` and ``mask/<id>.png`` with **0 = hole** (MAT's ``generate_image.py``
    ``--dpath`` and ``--mpath``, paired by name); ``release`` ``input/``, ``mask/`` and
    ``target/`` (the ground truth) as the authors' test code reads them. Written through a
    staging folder: an interrupted export leaves no half-written ``out``."""
    if layout not in EXPORT_LAYOUTS:
        raise ConfigError(f"--layout: one of {', '.join(EXPORT_LAYOUTS)}, got {layout!r}")
    names = EXPORT_LAYOUTS[layout]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty (give a new folder)")
    frame = read_manifest(manifest, split)
    if len(frame) == 0:
        raise DataError(f"{manifest}: the {split} split is empty")
    with staged_dir(out, {"manifest": str(Path(manifest).resolve()), "layout": layout}) as stage:
        for row in tqdm(frame.itertuples(), total=len(frame), desc=f"export ({layout})",
                        mininterval=5.0, file=sys.stderr):
            holes = to_holes(read_image(row.mask, cv2.IMREAD_GRAYSCALE))  # 255 = hole, binary
            write_image(stage / names["input"].format(id=row.id), read_image(row.corrupted))
            write_image(stage / names["mask"].format(id=row.id),
                        255 - holes if names["inverted"] else holes)
            if names["target"]:
                write_image(stage / names["target"].format(id=row.id), read_image(row.image))
    log.info("exported %d %s images to %s (%s layout)", len(frame), split, out, layout)
    return len(frame)


def predict_experiment(manifest: str | Path, out_dir: str | Path, experiment: str, kind: str,
                       architecture: str, options: dict[str, Any], model_path: str | None = None,
                       device: str = "auto", predictions: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
    """The predict rule: a model file (trained or imported) through :func:`predict`, a
    training-free method through :func:`predict_training_free`, another method's outputs
    through :func:`predict_external`."""
    if kind == "training-free":
        return predict_training_free(manifest, experiment, architecture, options, out_dir)
    if kind == "external":
        return predict_external(manifest, out_dir, experiment, predictions or {})
    return predict(manifest, model_path, out_dir, device=device, experiment=experiment)


PER_IMAGE = ("psnr", "ssim", "l1", "lpips")


#: images per metrics batch, for 256 px images: larger images take proportionally fewer, so
#: memory stays bounded (about 0.7 GB for SSIM in float64) whatever the image size
BATCH_PIXELS = 32 * 256 * 256


def _per_image(frame: pd.DataFrame, composites: list[Path], lpips: LPIPSMetric | str,
               batch_size: int) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    if len(frame):
        h, w = read_image(composites[0]).shape[:2]
        batch_size = max(1, min(batch_size, BATCH_PIXELS // (h * w)))
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start:start + batch_size]
        pred = torch.stack([to_tensor(read_image(p)) for p in composites[start:start + batch_size]])
        target = torch.stack([to_tensor(read_image(p)) for p in chunk["image"]])
        values = image_metrics(pred, target)
        if not isinstance(lpips, str):
            values["lpips"] = lpips(pred, target)
        # the NVIDIA protocol: the category of the source mask, computed from its file at its
        # own resolution (ndmha.data.masks); otherwise the prepared mask's hole ratio's bucket
        labels = (list(chunk["mask_category"]) if "mask_category" in chunk.columns
                  else hole_buckets(chunk["hole_ratio"]))
        for j, (image_id, ratio) in enumerate(zip(chunk["id"], chunk["hole_ratio"])):
            rows.append({"id": image_id, "hole_ratio": ratio, "bucket": labels[j],
                         **({"mask_border": chunk["mask_border"].iloc[j]}
                            if "mask_border" in chunk.columns else {}),
                         "image_size": target.shape[-1],
                         **{k: float(values[k][j]) if k in values else math.nan
                            for k in PER_IMAGE}})
    return pd.DataFrame(rows)


def _distribution(frame: pd.DataFrame, composites: list[Path], fid: dict[str, Any],
                  device: torch.device) -> Callable[[pd.Index], dict[str, Any]]:
    """FID, KID and KID's std of any subset of the images (their rows of ``frame``): every image
    goes through Inception once, here, and each subset indexes into those features. Without the
    weights (or switched off) each reads the text of :func:`ndmha.fidelity.metric_weights`."""
    weights = metric_weights(FID_KEY, fid.get("inception_weights", ""), "inception")
    if isinstance(weights, str):
        return lambda index: {"fid": weights, "fid_clean": weights, "kid": weights,
                              "kid_std": weights}
    generated = inception_features(composites, weights, device)
    real = inception_features(list(frame["image"]), weights, device)
    # FID a second way, clean-fid's (its resize and formula), on the same weights
    clean = (clean_features(composites, weights, device),
             clean_features(list(frame["image"]), weights, device))

    def measure(index: pd.Index) -> dict[str, Any]:
        rows = index.to_list()
        return {**fid_kid(generated[rows], real[rows]),
                "fid_clean": clean_fid(clean[0][rows], clean[1][rows])}
    return measure


def _by_bucket(table: pd.DataFrame, distribution: Callable[[pd.Index], dict[str, Any]]
               ) -> pd.DataFrame:
    """The per-image metrics' means and the distribution metrics per hole-ratio bucket, in the
    buckets' order (empty buckets left out)."""
    rows = []
    in_order = pd.Categorical(table["bucket"], categories=BUCKETS, ordered=True)
    for label, group in table.groupby(in_order, observed=True):
        values = distribution(group.index)
        rows.append({"bucket": label, "images": len(group),
                     **{k: group[k].mean() for k in PER_IMAGE},
                     **{k: v if isinstance(v, float) else math.nan for k, v in values.items()}})
    return pd.DataFrame(rows)


def score(manifest: str | Path, predictions: str | Path, per_image_csv: str | Path,
          buckets_csv: str | Path, summary_json: str | Path, split: str = "test",
          dataset: str = "", protocol: str = "none",
          lpips: dict[str, Any] | None = None,
          fid: dict[str, Any] | None = None, device: str = "auto",
          batch_size: int = 32) -> dict[str, Any]:
    """Compare each composite with its ground truth: PSNR, SSIM, L1, LPIPS per image; FID and KID
    over the split; all of them per hole-ratio bucket. Writes the per-image CSV, the bucket CSV
    and the summary JSON. A metric whose weights are missing reads ``n/a (weights not found at
    <path>)`` in the summary and is left empty in the CSVs. The summary carries the training
    budget and provenance (from ``predict.json``) and this evaluation's own provenance;
    ``protocol`` (``data.protocol``, resolved) is the paper's protocol the data stands for."""
    began = time.perf_counter()
    predictions, dev = Path(predictions), resolve_device(device)
    frame = read_manifest(manifest, split)
    composites = [predictions / "composite" / f"{i}.png" for i in frame["id"]]
    lpips_fn = lpips_metric(lpips or {}, dev)
    table = _per_image(frame, composites, lpips_fn, batch_size)
    distribution = _distribution(frame, composites, fid or {}, dev)
    for path, data in ((per_image_csv, table), (buckets_csv, _by_bucket(table, distribution))):
        with atomic_open(path, newline="") as fh:
            data.to_csv(fh, index=False)

    info = json.loads((predictions / "predict.json").read_text())
    train_provenance = info.pop("train_provenance", {})
    evaluation = {"split": split, "lpips": lpips or {}, "fid": fid or {}}
    summary = {
        **info,
        "dataset": dataset,
        "protocol": protocol,  # data.protocol: the paper's protocol the data stands for
        "image_size": int(table["image_size"].iloc[0]),
        **{k: float(table[k].mean()) for k in ("psnr", "ssim", "l1")},
        **{f"{k}_std": float(table[k].std(ddof=0)) for k in ("psnr", "ssim", "l1")},
        "lpips": lpips_fn if isinstance(lpips_fn, str) else float(table["lpips"].mean()),
        "lpips_net": (lpips or {}).get("net", "alex"),
        **distribution(table.index),
        "metric_notes": "composite vs ground truth; PSNR and SSIM with data_range 1.0 on [0, 1] "
                        "RGB, SSIM over the valid region (Gaussian 11x11, sigma 1.5, as "
                        "scikit-image); LPIPS v0.1; FID / KID from torch-fidelity's Inception-v3 (its TF1 "
                        "bilinear resize on uint8); fid_clean by clean-fid's recipe (PIL bicubic "
                        "resize on floats, pytorch-fid's network, the same weights)",
        "provenance": {
            "training": train_provenance,
            "evaluation": {**collect(dev, evaluation, manifest, dataset),
                           "wall_seconds": round(info.get("predict_seconds", 0.0)
                                                 + time.perf_counter() - began, 3)},
        },
    }
    write_json(summary_json, summary)
    log.info("%s on %d %s images: PSNR %.3f dB, SSIM %.4f, L1 %.4f, LPIPS %s, FID %s",
             info["experiment"], len(table), split, summary["psnr"], summary["ssim"], summary["l1"],
             summary["lpips"], summary["fid"])
    return summary
