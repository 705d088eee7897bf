"""Diagnostic: which way does each loss term pull the generator, against the direction that
raises PSNR?

For a training run's checkpoint (``results/<study>/checkpoints/<experiment>/last.pt``) or a
fresh initialisation, on fixed batches of a split of the manifest (their manifest masks), the
gradient of every weighted term of the objective (``weight_k * term_k``: L1 of both outputs,
adversarial, perceptual, edge) with respect to the generator's parameters, per stage (the
parameters' first name: ``coarse``, ``fine``, ...), beside the gradient of the mean squared
error of the composite (``ndmha.metrics.composite``: the prediction in the hole, the input
elsewhere), the quantity composite PSNR measures: only the hole's pixels reach the generator. For each term: its value, its gradient norm
per stage and in all, and the cosine between its gradient and the PSNR direction (1: raises
PSNR at full speed, 0: orthogonal, below 0: lowers it). The sum of the terms is the step the
optimizer takes (before Adam's per-parameter scaling and the clip).

The random perceptual network is rebuilt as the run built it (the same seed, the same order of
construction as ``ndmha.train.Trainer``), the discriminator and generator are loaded from the
checkpoint.

    python study/objective.py --manifest results/study/data/manifest.csv \\
        --checkpoint results/study/checkpoints/ndmha.seed0/last.pt --batches 4
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # shared helpers
from _common import LOSSES, bench_trainer, machine, print_table  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from ndmha.data.dataset import InpaintingDataset  # noqa: E402
from ndmha.metrics import composite  # noqa: E402
from ndmha.model_files import load_torch  # noqa: E402
from ndmha.train import forward_stages  # noqa: E402


def flat_grads(loss: torch.Tensor, params: dict[str, torch.nn.Parameter]
               ) -> dict[str, torch.Tensor]:
    """d loss / d parameter, flattened, zeros where a parameter does not reach the loss."""
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True,
                                allow_unused=True)
    return {name: (g if g is not None else torch.zeros_like(p)).flatten().double()
            for (name, p), g in zip(params.items(), grads)}


def norm(grads: dict[str, torch.Tensor], stage: str | None = None) -> float:
    """The gradient's norm over every parameter, or over those of one stage."""
    return math.sqrt(sum(float(g.pow(2).sum()) for n, g in grads.items()
                         if stage is None or n.split(".")[0] == stage))


def summarise(grads: dict[str, torch.Tensor], stages: list[str]) -> dict[str, float]:
    """Gradient norm per stage and in all."""
    return {**{f"|g| {stage}": norm(grads, stage) for stage in stages}, "|g| all": norm(grads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a training checkpoint (last.pt); without it: the initialisation")
    parser.add_argument("--architecture", default="ndmha")
    parser.add_argument("--loss", type=json.loads, default=None,
                        help="the objective's weights as JSON (default: the study's)")
    parser.add_argument("--seed", type=int, default=0, help="the run's train.seed")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cpu")
    loss = args.loss or LOSSES[args.architecture]
    trainer = bench_trainer(device, args.manifest, architecture=args.architecture, loss=loss,
                            seed=args.seed, batch_size=args.batch, tensorboard=False)
    where = "initialisation"
    if args.checkpoint is not None:
        state = load_torch(args.checkpoint)
        trainer._load_networks(state)
        where = f"{args.checkpoint} ({state['history'][-1]['steps']} steps)"
    model, objective = trainer.model, trainer.objective
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    stages = list(dict.fromkeys(n.split(".")[0] for n in params))
    loader = DataLoader(InpaintingDataset(args.manifest, args.split), batch_size=args.batch)
    sums: dict[str, dict[str, float]] = {}
    for i, batch in enumerate(loader):
        if i == args.batches:
            break
        image, mask, target = batch["image"], batch["mask"], batch["target"]
        coarse, pred = forward_stages(model, image, mask)
        _, parts = objective(pred, target, mask, image, coarse)
        mse = F.mse_loss(composite(pred, image, mask), target)
        psnr_dir = {n: -g for n, g in flat_grads(mse, params).items()}  # its descent: PSNR up
        psnr_norm = norm(psnr_dir)
        terms = {name: objective.weights[name] * value for name, value in parts.items()}
        terms["total"] = sum(terms.values())
        for name, term in terms.items():
            grads = flat_grads(term, params)
            row = {"value": float(term.detach()), **summarise(grads, stages)}
            dot = sum(float((-g * psnr_dir[n]).sum()) for n, g in grads.items())  # -grad: step
            row["cos with PSNR"] = dot / max(row["|g| all"] * psnr_norm, 1e-30)
            for key, value in row.items():
                sums.setdefault(name, {}).setdefault(key, 0.0)
                sums[name][key] += value
        n_batches = i + 1
    rows = [{"term (weighted)": name, **{k: v / n_batches for k, v in values.items()}}
            for name, values in sums.items()]
    print_table(f"{args.architecture}, {where}: gradient of each weighted loss term against "
                f"the composite MSE's descent, {args.split} split, {n_batches} batches of "
                f"{args.batch}, {machine(device)}", rows)


if __name__ == "__main__":
    main()
