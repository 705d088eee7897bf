"""What the workflow's train rule calls: training in this process, or under torchrun with one
process per GPU when the rule asks for several (``resources.train.gpu`` > 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ndmha.train import TrainSettings, train


def launch_training(manifest: str | Path, model_out: str | Path, log_csv: str | Path,
                    checkpoint: str | Path, settings: dict[str, Any], gpus: int = 0,
                    tensorboard_dir: str | Path | None = None) -> None:
    """Train in this process, or under ``torchrun --nproc-per-node <gpus>`` when ``gpus`` > 1
    (its children inherit this process's environment: the deformable-conv backend included)."""
    if gpus <= 1:
        train(manifest, model_out, log_csv, checkpoint, TrainSettings(**settings),
              tensorboard_dir)
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={gpus}", "-m", "ndmha", "train", "--manifest", str(manifest),
           "--model-out", str(model_out), "--log-csv", str(log_csv), "--checkpoint",
           str(checkpoint), "--settings", json.dumps(settings)]
    if tensorboard_dir is not None:
        cmd += ["--tensorboard-dir", str(tensorboard_dir)]
    subprocess.run(cmd, check=True, stdout=sys.stderr, stderr=sys.stderr, env=os.environ.copy())
