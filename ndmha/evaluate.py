"""Test-split inference and per-image metrics.

:func:`predict` writes, per test image, the raw network output (``raw/<id>.png``) and the composite
(``composite/<id>.png``: prediction inside the holes, the input elsewhere), plus ``predict.json``
with the inference time per image (batch 1, after warm-up, synchronised on GPU, median).
:func:`score` reads those PNGs back and compares the composites with the ground-truth JPGs.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from ndmha.data.dataset import InpaintingDataset, to_image, to_tensor
from ndmha.data.split import read_manifest
from ndmha.io import atomic_open, read_image, staged_dir, write_image, write_json
from ndmha.metrics import composite, image_metrics
from ndmha.models import count_parameters
from ndmha.models.layers import set_deform_backend
from ndmha.train import load_model, resolve_device

log = logging.getLogger("ndmha")

WARMUP = 2


def device_name(device: torch.device) -> str:
    """A human-readable name of the device inference ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@torch.inference_mode()
def predict(manifest: str | Path, model_path: str | Path, out_dir: str | Path,
            split: str = "test", device: str = "auto", deform_backend: str = "torchvision"
            ) -> dict[str, Any]:
    """Inpaint every image of ``split``; write raw outputs, composites and ``predict.json``."""
    set_deform_backend(deform_backend)
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
            "model": meta["model"],
            "split": split,
            "images": len(dataset),
            "parameters": count_parameters(model),
            "inference_s_per_image": statistics.median(timings),
            "device": device_name(dev),
            "warnings": meta.get("warnings", []),
        }
        write_json(stage / "predict.json", info)
    log.info("predicted %d %s images in %s (median %.4f s/image on %s)", len(dataset), split,
             out_dir, info["inference_s_per_image"], info["device"])
    return info


def score(manifest: str | Path, predictions: str | Path, per_image_csv: str | Path,
          summary_json: str | Path, split: str = "test", dataset: str = "",
          batch_size: int = 32) -> dict[str, Any]:
    """PSNR, SSIM and L1 of each composite against its ground truth; per-image CSV and summary."""
    predictions = Path(predictions)
    frame = read_manifest(manifest, split)
    rows: list[dict[str, Any]] = []
    image_size = 0
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start:start + batch_size]
        pred = torch.stack([to_tensor(read_image(predictions / "composite" / f"{i}.png"))
                            for i in chunk["id"]])
        target = torch.stack([to_tensor(read_image(p)) for p in chunk["image"]])
        values = image_metrics(pred, target)
        image_size = target.shape[-1]
        for j, (image_id, ratio) in enumerate(zip(chunk["id"], chunk["hole_ratio"])):
            rows.append({"id": image_id, "hole_ratio": ratio,
                         **{k: float(v[j]) for k, v in values.items()}})
    table = pd.DataFrame(rows)
    with atomic_open(per_image_csv, newline="") as fh:
        table.to_csv(fh, index=False)
    info = json.loads((predictions / "predict.json").read_text())
    summary = {
        **info,
        "dataset": dataset,
        "image_size": image_size,
        **{k: float(table[k].mean()) for k in ("psnr", "ssim", "l1")},
        **{f"{k}_std": float(table[k].std(ddof=0)) for k in ("psnr", "ssim", "l1")},
        "metric_notes": "composite vs ground truth; PSNR and SSIM with data_range 1.0 on [0, 1] RGB",
    }
    write_json(summary_json, summary)
    log.info("%s on %d %s images: PSNR %.3f dB, SSIM %.4f, L1 %.4f", info["model"], len(table),
             split, summary["psnr"], summary["ssim"], summary["l1"])
    return summary
