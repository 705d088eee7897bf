"""What makes a run repeat: the RNG states a checkpoint keeps, and ``train.deterministic``."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

log = logging.getLogger("ndmha")


def rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator's state and, on a GPU, the state of this process's own device only (not
    every visible GPU's): rank 0 writes the checkpoint, so it holds rank 0's states, and a run
    resumed on another number of GPUs gives each rank these same states. No random draw of the
    training depends on a rank's CUDA generator (masks and data order come from the seed, the
    epoch and the index), so sharing it loses nothing."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda, device)


def deterministic() -> None:
    """``train.deterministic``: torch's deterministic algorithms (``warn_only``: an op without
    one warns instead of raising, e.g. grid_sample's CUDA backward, which our torch deformable
    conv uses), cuDNN's deterministic convolutions without autotuning, and cuBLAS's fixed
    workspace (set before CUDA starts). What stays non-deterministic: docs/architecture.md,
    "Determinism on a GPU"."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    log.info("deterministic algorithms on (warn_only: ops without one warn)")
