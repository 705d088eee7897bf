"""The device a job runs on, and its name in the tables: below training and inference alike,
so that prediction and scoring import no training loop."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_threads() -> str:
    """torch's CPU threads in words: "1 thread", "2 threads"."""
    threads = torch.get_num_threads()
    return f"{threads} thread{'' if threads == 1 else 's'}"


def device_name(device: torch.device) -> str:
    """A human-readable name of a device: the GPU's, or the CPU model and its threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} CPU ({cpu_threads()})"
