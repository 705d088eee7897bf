"""The device a job runs on, and its name in the tables: below training and inference alike,
so that prediction and scoring import no training loop."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

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


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1
               ) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones, each timed
    between two synchronisations of ``device``: the one timer of the preflight's step
    (:meth:`ndmha.train.Trainer.time_steps`) and the benchmarks.

    Hand-written rather than ``torch.utils.benchmark.Timer``: Timer gives the mean of ``number``
    runs (``timeit``) or a median over as many blocks as ``min_run_time`` allows
    (``blocked_autorange``: a training step of seconds is then timed once), not each of a fixed
    count after a fixed warm-up, which the bench tables summarise; and Timer runs one thread
    unless told, where these run at the process's torch threads."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        synchronize(device)
        began = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - began)
    return times
