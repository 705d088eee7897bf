"""Where a number came from: the code (git commit, dirty or not), the settings (their hash), the
software (Python, torch, torchvision, CUDA, cuDNN), the device, and the data (dataset name, image
count, a hash of the split manifest). Training records it in ``model.pt``, evaluation carries it
into every ``summary.json``, the tables and the report show it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import ndmha
from ndmha.devices import device_name
from ndmha.hashing import sha256_file, sha256_json

REPOSITORY = Path(ndmha.__file__).resolve().parents[1]


def git_state(repository: Path = REPOSITORY) -> dict[str, Any]:
    """The commit of the code that ran and whether tracked files differed from it (None for
    both when the package does not run from a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repository), *args], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _torchvision_version() -> str:
    """torchvision's ``__version__`` (with its build suffix, e.g. ``+cu130``), read from its
    ``version.py`` as text when it is not imported: importing it (its models and ops, torch's
    dynamo) costs a scoring job about 3 s."""
    loaded = sys.modules.get("torchvision")
    if loaded is not None:
        return str(loaded.__version__)
    spec = importlib.util.find_spec("torchvision")
    path = Path(spec.origin).with_name("version.py") if spec and spec.origin else None
    found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", path.read_text(), re.M) \
        if path is not None and path.is_file() else None
    return found.group(1) if found else importlib.metadata.version("torchvision")


def software() -> dict[str, Any]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": _torchvision_version(), "cuda": torch.version.cuda,
            "cudnn": cudnn, "platform": platform.platform(), "ndmha": ndmha.__version__,
            "executable": sys.executable}


def data_source(manifest: str | Path, dataset: str = "") -> dict[str, Any]:
    """The dataset's name, its image count and the split manifest's hash (which pins every
    file path, split and hole ratio)."""
    lines = Path(manifest).read_text().splitlines()
    return {"dataset": dataset, "images": max(len(lines) - 1, 0),
            "manifest_sha256": sha256_file(manifest)}


def collect(device: torch.device, settings: Any, manifest: str | Path,
            dataset: str = "") -> dict[str, Any]:
    """The provenance block of one job: code, settings hash, software, device and data."""
    return {**git_state(), "settings_sha256": sha256_json(settings), **software(),
            "device": device_name(device), **data_source(manifest, dataset)}
