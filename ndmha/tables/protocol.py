"""The protocol card: exactly which test set and which metrics produced a run's numbers, so
that a reader can tell whether two tables were measured on the same thing.

It names the data and the paper's protocol they stand for, hashes the test split's ids and the
test masks as scored (each id with its mask's pixels, 255 in the holes, at the evaluated size,
by the set hash of the protocol packs, :func:`ndmha.hashing.set_sha256`), and says the
resolution, the masks' polarity, what is composited, each metric's implementation with its
weights' hash, and the image counts: ``protocol.json`` beside the tables, ``protocol.md``, the
report's front page, and a line under every table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ndmha.data.split import read_manifest
from ndmha.hashing import set_sha256, sha256_buffer
from ndmha.io import read_image
from ndmha.weights import LPIPS_WEIGHTS, REGISTRY

COMPOSITING = "the prediction in the holes, the input outside, against the ground truth"


def _weights(name: str, value: Any) -> str:
    """A metric's weights as the run used them: the published file and its hash, or why not."""
    spec = REGISTRY[name]
    if isinstance(value, str) and (value.startswith("n/a") or value == "off"):
        return "off" if value == "off" else f"n/a, weights missing ({spec.file})"
    return f"{spec.file}, SHA-256 {spec.hash_prefix}…"


def protocol_card(manifest: str | Path, summaries: list[dict], facts: dict[str, Any]
                  ) -> dict[str, Any]:
    """The card of a run: ``manifest`` its split manifest, ``summaries`` its runs' summaries
    (the metrics' values say whether their weights were there), ``facts`` what the config says
    (data name and protocol, mask protocol and polarity, split scheme and seed, image size)."""
    frame = read_manifest(manifest)
    test = frame[frame["split"] == "test"]
    masks = [(i, sha256_buffer(np.ascontiguousarray(read_image(p, cv2.IMREAD_GRAYSCALE))))
             for i, p in zip(test["id"], test["mask"])]
    counts = {split: int((frame["split"] == split).sum()) for split in ("train", "val", "test")}
    first = summaries[0] if summaries else {}
    lpips_net = first.get("lpips_net", "alex")
    return {
        "dataset": facts["dataset"],
        "protocol": facts["protocol"],
        "split": {"scheme": facts["split_scheme"], "seed": facts["split_seed"], **counts,
                  "test_ids_sha256": set_sha256((i, "") for i in test["id"])},
        "masks": {"source": facts["mask_protocol"],
                  "source_polarity": f"{facts['mask_hole']} = hole",
                  "scored_polarity": "255 = hole, 0 = kept", "test_set_sha256": set_sha256(masks),
                  "test_mean_hole_ratio": round(float(test["hole_ratio"].mean()), 6)},
        "resolution": facts["image_size"],
        "compositing": COMPOSITING,
        "metrics": {
            "psnr, ssim, l1": "ndmha.metrics on [0, 1] RGB; SSIM Gaussian 11x11, sigma 1.5",
            "lpips": f"lpips v0.1, {lpips_net}: "
                     f"{_weights(LPIPS_WEIGHTS[lpips_net], first.get('lpips'))}",
            "fid, kid": f"torch-fidelity Inception-v3: {_weights('inception', first.get('fid'))}",
            "fid_clean": "clean-fid's resize (PIL bicubic, floats) and formula, pytorch-fid's "
                         "network, the same weights",
        },
        "images": {"test": counts["test"], "per_run": len(test)},
    }


def protocol_rows(card: dict[str, Any]) -> list[tuple[str, str]]:
    """The card as (what, value) rows, the Markdown's and the report's."""
    split, masks = card["split"], card["masks"]
    return [
        ("data", f"{card['dataset']} (data.protocol: {card['protocol']})"),
        ("split", f"{split['scheme']}, seed {split['seed']}: {split['train']:,} train, "
                  f"{split['val']:,} val, {split['test']:,} test"),
        ("test ids", f"SHA-256 {split['test_ids_sha256']}"),
        ("test masks", f"SHA-256 {masks['test_set_sha256']} (pixels as scored)"),
        ("masks", f"{masks['source']}, source {masks['source_polarity']}; scored "
                  f"{masks['scored_polarity']}; mean hole ratio {masks['test_mean_hole_ratio']}"),
        ("resolution", f"{card['resolution']} px"),
        ("compositing", card["compositing"]),
        *((f"metric: {k}", v) for k, v in card["metrics"].items()),
    ]


def protocol_rst(card: dict[str, Any]) -> str:
    """The card for the report's front page: a list (it wraps in the report's narrow column)."""
    lines = ["Protocol card", "=============", "",
             "What produced every number of this report (``tables/protocol.json``): two reports "
             "with the same hashes scored the same test images and masks.", ""]
    lines += [f"- **{k}**: {v.replace('*', '')}" for k, v in protocol_rows(card)]
    return "\n".join(lines) + "\n"
