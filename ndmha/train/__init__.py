"""Training: one loop for every experiment (:mod:`ndmha.train.loop`), its settings
(:mod:`~ndmha.train.settings`), what an epoch keeps on the device (:mod:`~ndmha.train.running`),
its TensorBoard board (:mod:`~ndmha.train.board`) and what makes it repeat
(:mod:`~ndmha.train.reproducibility`)."""

from ndmha.train.loop import TIMING_COLUMNS, Trainer, evaluate, forward_stages, train, write_history
from ndmha.train.settings import TrainSettings, autocast

__all__ = ["TIMING_COLUMNS", "TrainSettings", "Trainer", "autocast", "evaluate", "forward_stages",
           "train", "write_history"]
