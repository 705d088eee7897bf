"""The GPUs of a local run: how many there are, and which one each job gets.

Snakemake schedules a local run's jobs against ``--resources``; a resource it is not given has no
limit. Without one for ``gpu``, every job that trains or predicts starts at once, and every one of
them lands on device 0. The workflow therefore counts the GPUs when it builds its DAG (here,
without importing torch, which would cost seconds at every DAG build), registers that count as the
``gpu`` resource unless ``--resources gpu=N`` gives it, and has each network job ask for one. A job
then claims as many ids as it asked for from a small pool of lock files in the results folder, and
sees only those (``CUDA_VISIBLE_DEVICES``); a job that asked for none sees no GPU, as a CPU node of
a cluster. The scheduler keeps the jobs at or under the count, so a claim finds its ids free; the
locks make the ids distinct. A lock is ``flock``'s: the kernel drops it when the job's process
ends, however it ends (``kill -9`` included), so nothing is left to clean up.

On a cluster the scheduler (SLURM) hands each job its devices; none of this applies there.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger("ndmha")

#: the environment a local run gives its jobs: the pool's folder and the device ids in it
POOL_ENV = "NDMHA_GPU_POOL"
IDS_ENV = "NDMHA_GPU_IDS"
#: seconds between two looks for a free id (the scheduler makes a wait rare: another run
#: sharing the results folder)
POLL_S = 5.0


def visible_ids(environ: dict[str, str] | None = None) -> list[str] | None:
    """The ids ``CUDA_VISIBLE_DEVICES`` allows, in order (CUDA stops at the first invalid
    entry, ``-1`` included), or None when it is not set."""
    environ = os.environ if environ is None else environ
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        ids.append(entry)
    return ids


def detect(environ: dict[str, str] | None = None, timeout: float = 10.0) -> list[str]:
    """The GPU ids a local run may use: ``CUDA_VISIBLE_DEVICES``'s when it is set, else one per
    line of ``nvidia-smi -L``; none where there is no NVIDIA driver."""
    ids = visible_ids(environ)
    if ids is not None:
        return ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("nvidia-smi -L failed (%s): no GPUs counted; give --resources gpu=N", error)
        return []
    if listed.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(l for l in listed.stdout.splitlines()
                                            if l.startswith("GPU "))]


def pool(detected: list[str], given: int | None) -> list[str]:
    """The ids a local run shares among its jobs: the detected ones, or as many as ``given``
    (``--resources gpu=N``) says, taken from the detected ones first and numbered on from there
    (a count given on a machine that reports fewer is taken at its word)."""
    if given is None:
        return list(detected)
    numbered = [str(i) for i in range(given) if str(i) not in detected]
    return (list(detected) + numbered)[:given]


#: the open lock files of this process's claim: held until the process ends
_held: list[int] = []


def claim(count: int, folder: str | Path, ids: list[str], poll: float = POLL_S) -> list[str]:
    """Lock ``count`` of ``ids`` in ``folder`` (one ``gpu<id>.lock`` each) for the rest of this
    process, waiting while too few are free; the ids claimed."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        got: list[tuple[str, int]] = []
        for gpu in ids:
            fd = os.open(folder / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            got.append((gpu, fd))
            if len(got) == count:
                _held.extend(fd for _, fd in got)
                return [gpu for gpu, _ in got]
        for _, fd in got:
            os.close(fd)
        if not waited:
            log.info("waiting for %d free GPU(s) of %s (locks in %s)", count, ",".join(ids),
                     folder)
            waited = True
        time.sleep(poll)


def assign(asked: int, environ: dict[str, str] | None = None) -> str | None:
    """Give this job of a local run its devices: ``asked`` ids claimed from the run's pool
    (:data:`POOL_ENV`, :data:`IDS_ENV`), or none; sets and returns ``CUDA_VISIBLE_DEVICES``.
    Outside a local run (no pool: a cluster job, a command run by hand) nothing changes: None."""
    environ = os.environ if environ is None else environ
    folder, ids = environ.get(POOL_ENV), environ.get(IDS_ENV)
    if not folder or ids is None:
        return None
    ids_list = [i for i in ids.split(",") if i]
    chosen = claim(min(asked, len(ids_list)), folder, ids_list) if asked and ids_list else []
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    return environ["CUDA_VISIBLE_DEVICES"]
