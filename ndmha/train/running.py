"""What one epoch keeps on the device while it trains: the running means of the loss terms and
metrics, and the non-finite guard's counters; the host reads them once per ``log_every`` steps
and at the epoch's end."""

from __future__ import annotations

import torch

from ndmha.metrics import composite, image_metrics


def finite(*values: torch.Tensor) -> torch.Tensor:
    """Whether every value is finite: a bool tensor on their device (no host sync)."""
    return torch.stack([torch.isfinite(v).all() for v in values]).all()


class RunningMeans:
    """Running per-image means of the loss, its terms and the composite's metrics, summed on the
    device (float64 on a CPU, float32 metrics on a GPU) and read once, by :meth:`result`.

    Kept rather than ``torchmetrics.aggregation.MeanMetric`` (torchmetrics 1.9): a skipped step
    must add nothing without the host looking at it, i.e. a weight of 0 that is a device tensor.
    MeanMetric's ``nan_strategy="disable"`` discards the weight argument (its
    ``_cast_and_nan_check_input`` replaces it by ones: ``test_meanmetric_disable_ignores_weight``),
    and every other strategy calls ``isnan(x).any()`` in ``update``: a device-to-host sync per
    step on a GPU, which these sums exist to avoid. Under DDP the epoch's sums go in one
    all-reduce (``distributed.all_sum``), not one gather per metric and state.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count: torch.Tensor | float = 0.0

    def add(self, n: int, losses: dict[str, torch.Tensor], pred: torch.Tensor,
            image: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
            ok: torch.Tensor | None = None) -> None:
        """Add one batch of ``n`` images; a step that ``ok`` (a bool tensor) marks as skipped
        adds nothing (its values may be NaN)."""
        dtype = torch.float64 if pred.device.type == "cpu" else torch.float32
        ok = torch.ones((), dtype=torch.bool, device=pred.device) if ok is None else ok
        zero = torch.zeros((), dtype=torch.float64, device=pred.device)
        values = {name: value.detach().to(torch.float64) * n for name, value in losses.items()}
        # clamped as the test metrics' 8-bit images are, so logged and test metrics compare
        metrics = image_metrics(composite(pred.clamp(0, 1), image, mask), target, dtype,
                                to_cpu=False)
        values.update({name: v.sum().to(torch.float64) for name, v in metrics.items()})
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, zero) + torch.where(ok, value, zero)
        self.count = self.count + ok.to(torch.float64) * n

    def state(self) -> dict[str, object]:
        """The sums so far, for a checkpoint written mid-epoch."""
        return {"sums": dict(self.sums), "count": torch.as_tensor(self.count)}

    def load(self, state: dict[str, object], device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = state["count"].to(device)

    def totals(self) -> tuple[list[str], list[float]]:
        """The sums' names and values, then the image count last: one host sync."""
        keys = sorted(self.sums)
        count = torch.as_tensor(self.count, dtype=torch.float64)
        values = [*(self.sums[k].cpu() for k in keys), count.cpu()]
        return keys, torch.stack(values).tolist()

    def result(self, prefix: str, totals: tuple[list[str], list[float]] | None = None
               ) -> dict[str, float]:
        keys, values = totals or self.totals()
        *sums, count = values
        return {f"{prefix}_{k}": v / max(count, 1) for k, v in zip(keys, sums)}


class NonFiniteGuard:
    """The non-finite guard's counters, kept on the device: steps skipped, the current run of
    skipped steps in a row and the longest run since the host last looked (:meth:`read`)."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.long, device=device)
        self.pending, self.run, self.longest = zero.clone(), zero.clone(), zero.clone()
        self.skipped = 0  # read so far, on the host

    def add(self, ok: torch.Tensor) -> None:
        bad = (~ok).long()
        self.pending += bad
        self.run = (self.run + 1) * bad
        self.longest = torch.maximum(self.longest, self.run)

    def read(self) -> tuple[int, int, int]:
        """(skipped since the last read, the longest run in it, the run now): one host sync."""
        skipped, longest, now = torch.stack([self.pending, self.longest, self.run]).tolist()
        self.skipped += skipped
        self.pending.zero_()
        self.longest.copy_(self.run)
        return skipped, longest, now

    def state(self) -> dict[str, object]:
        """The counters so far, for a checkpoint written mid-epoch."""
        return {"pending": self.pending.clone(), "run": self.run.clone(),
                "longest": self.longest.clone(), "skipped": self.skipped}

    def load(self, state: dict[str, object]) -> None:
        for name in ("pending", "run", "longest"):
            getattr(self, name).copy_(state[name])
        self.skipped = int(state["skipped"])

    def reset_run(self) -> None:
        self.run.zero_()
        self.longest.zero_()
