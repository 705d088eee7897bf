"""Benchmark: training images/s of the baseline, our NDMHA and the released NDMHA structure,
side by side, with peak memory.

One full training step each (NDMHA: discriminator step + generator step with all four loss terms;
baseline: L1), through the workflow's own trainer, for every combination of precision (fp32,
bf16 autocast), memory format (contiguous, channels_last), torch.compile (off, on) and batch size.

    python bench/train_step.py                                   # GPU: 256 px, batch 1 ... 64
    python bench/train_step.py --size 64 --batches 1 4 --repeat 2 --no-compile   # 2 CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import torch
from _common import LOSSES, bench_trainer, machine, peak_mib, print_table, reset_peak, time_fn

from ndmha.models.layers import AUTO, resolve_backend



def measure(model: str, size: int, batch: int, amp: str, channels_last: str, compile_: bool,
            device: torch.device, backend: str, repeat: int, manifest: Path) -> dict[str, object]:
    trainer = bench_trainer(manifest, device, architecture=model, batch_size=batch,
                            loss=LOSSES[model], amp=amp, channels_last=channels_last,
                            compile=compile_, deform_backend=backend)
    fmt = trainer.memory_format
    target = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()
    mask = mask.contiguous(memory_format=fmt)
    image = target * (1 - mask)
    reset_peak(device)
    seconds = time_fn(lambda: trainer.train_batch(image, mask, target), device,
                      warmup=3 if compile_ else 2, repeat=repeat)
    return {"model": model, "batch": batch, "precision": "bf16" if amp == "bf16" else "fp32",
            "channels_last": channels_last == "on", "compile": compile_,
            "images/s": batch / seconds, "ms/step": 1000 * seconds,
            "peak MiB": peak_mib(device) or "n/a (CPU)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--models", nargs="+", default=list(LOSSES))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--deform-backend", default=None,
                        help="default: torchvision on GPU, torch on CPU (the faster there)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backend = resolve_backend(args.deform_backend or AUTO, device)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")
        rows = []
        for model in args.models:
            variants = itertools.product(("off", "bf16"), ("off", "on"),
                                         (False,) if args.no_compile else (False, True))
            for amp, channels_last, compile_ in variants:
                for batch in args.batches:
                    try:
                        rows.append(measure(model, args.size, batch, amp, channels_last,
                                            compile_, device, backend, args.repeat, manifest))
                    except torch.OutOfMemoryError:
                        rows.append({"model": model, "batch": batch, "images/s": "OOM"})
                        torch.cuda.empty_cache()
                    print(rows[-1], flush=True)
    print_table(f"Training step, {args.size}x{args.size}, {machine(device)}, deformable conv: "
                f"{backend}", rows)
    for model in args.models:
        mine = [r for r in rows if r["model"] == model and isinstance(r["images/s"], float)]
        base = [r for r in mine if r["precision"] == "fp32" and not r["channels_last"]
                and not r["compile"] and r["batch"] == args.batches[0]]
        if base and mine:
            best = max(mine, key=lambda r: r["images/s"])
            print(f"\n{model}: best {best['images/s']:.1f} images/s ({best['precision']}, "
                  f"channels_last={best['channels_last']}, compile={best['compile']}, batch "
                  f"{best['batch']}) = {best['images/s'] / base[0]['images/s']:.2f}x fp32 eager "
                  f"batch {args.batches[0]}")


if __name__ == "__main__":
    main()
