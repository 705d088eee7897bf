"""The package's own files: a ``model.pt`` (a trained or imported model with its budget and
provenance) and a training checkpoint (``last.pt``), written atomically and read back with
``weights_only=True``. Files from elsewhere are :mod:`ndmha.foreign_weights`'."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndmha.io import write_bytes
from ndmha.models import build_model


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` to memory, then written atomically (a full disk is then an ``OSError`` that
    names the file, where torch's own writer raises an opaque RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def load_torch(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or model file safely (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def is_model_file(state: Any) -> bool:
    """A ``model.pt`` of this project (trained or imported), not a foreign checkpoint."""
    return isinstance(state, dict) and "architecture" in state and "state_dict" in state


def read_ours(path: str | Path) -> dict[str, Any] | None:
    """A model.pt or training checkpoint of this project; None for any other file (read
    ``weights_only``, so a foreign pickle fails to load here and nothing in it runs)."""
    try:
        state = load_torch(path)
    except Exception:  # a whole pickled module, or another foreign format
        return None
    if is_model_file(state) or (isinstance(state, dict) and "model" in state
                                and "fingerprint" in state):
        return state
    return None


def load_model(path: str | Path, device: torch.device | str = "cpu"
               ) -> tuple[dict[str, Any], nn.Module]:
    """What a ``model.pt`` written by :func:`ndmha.train.train` says of itself (architecture and
    options, experiment, budget, provenance, warnings) and the trained model in eval mode."""
    state = load_torch(path)
    model = build_model(state["architecture"], state.get("options"))
    model.load_state_dict(state.pop("state_dict"))
    return state, model.to(device).eval()
