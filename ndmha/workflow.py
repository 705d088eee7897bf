"""Glue for the thin scripts under workflow/scripts/: logging to the rule's log, clear errors."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Callable

from ndmha import gpus
from ndmha.errors import ConfigError, DataError, DiskFullError, TrainingInterrupted
from ndmha.io import setup_logging

log = logging.getLogger("ndmha")


def run(snakemake: Any, step: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``step(**kwargs)`` for a Snakemake job.

    Logs and progress bars go to the rule's log file; torch uses the rule's ``threads``; in a
    local run the job sees the GPUs it asked for and no others (:mod:`ndmha.gpus`). A bad
    input or config, or a full disk, stops the job with its one-line message on the terminal as
    well as in the log; training stopped by a signal exits with status 75 (its checkpoint
    written: a retry resumes it); any other failure leaves its traceback in both.
    """
    terminal = sys.stderr
    setup_logging(snakemake.log[0] if snakemake.log else None)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    log.info("rule %s: %s", snakemake.rule, step.__qualname__)
    devices = gpus.assign(int(snakemake.resources.get("gpu", 0) or 0))
    if devices is not None:  # a local run: this job's GPUs, claimed from the run's pool
        log.info("CUDA_VISIBLE_DEVICES=%s (%s)", devices,
                 "this job's GPU" if devices else "no GPU for this job")
    try:
        return step(**kwargs)
    except TrainingInterrupted as err:  # a signal: checkpoint written, the job is to run again
        log.warning("%s", err)
        print(f"Interrupted rule {snakemake.rule}: {err}", file=terminal)
        sys.exit(TrainingInterrupted.EXIT_STATUS)
    except (DataError, ConfigError, DiskFullError) as err:
        log.error("%s", err)
        print(f"Error in rule {snakemake.rule}: {err}", file=terminal)
        sys.exit(1)
    except Exception:
        log.exception("rule %s failed", snakemake.rule)
        traceback.print_exc(file=terminal)
        sys.exit(1)
