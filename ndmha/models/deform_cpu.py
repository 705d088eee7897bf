"""The fused CPU kernel of the DMHA's depthwise deformable convolution (``deform_cpu.c``): built
once per machine with the C compiler, loaded with ctypes, wrapped in an autograd Function.

The kernel is plain C (no Python or torch headers: a second to compile), compiled with
``-O3 -march=native`` into a per-user cache (``$NDMHA_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/ndmha`` or ``~/.cache/ndmha``) under a name hashed from its source, the
compiler's version, the flags and the CPU's feature flags: a cluster's nodes of different CPUs
each get their own build, and an edited source is rebuilt (a read-only cache: the temporary
folder instead). It is written to a temporary name and renamed, so that two jobs building at
once cannot load half a file. Where there is no
compiler (or the build fails) :func:`available` says why and the ``auto`` backend runs the
pure-torch reference instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger("ndmha")

SOURCE = Path(__file__).with_name("deform_cpu.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c11")
SUFFIX = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}
_INT = ctypes.c_int64
_PTR = ctypes.c_void_p


def blocks(batch: int) -> int:
    """Row blocks per image: the units of work are (image, block), at least 8 per call so that
    batch 1 also spreads over threads; fixed by the batch alone, never by the thread count, so
    that the sums (and the gradients) are the same whatever the threads."""
    return max(1, -(-8 // batch))


def _cache_dir() -> Path:
    env = os.environ.get("NDMHA_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ndmha"


def _cpu_flags() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags (Linux), else its name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _build(scalar: str, suffix: str) -> Path:
    """The shared library for one dtype, built into the cache unless it is there already."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    defines = (f"-DSCALAR={scalar}", f"-DSUFFIX={suffix}")
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, *FLAGS, *defines,
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    name = f"deform_cpu_{suffix}_{key}.so"
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"ndmha-kernels-{os.getuid()}"):
        target = folder / name
        if target.exists():
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / name
                done = subprocess.run([cc, *FLAGS, *defines, str(SOURCE), "-o", str(built),
                                       "-lm"], capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{cc} failed on {SOURCE.name}: "
                                       f"{done.stderr.strip()[-500:]}")
                os.replace(built, target)  # whole or not at all, whoever builds at once
            return target
        except PermissionError:  # a read-only cache: the next folder
            continue
    raise RuntimeError(f"no writable folder for the kernel (tried {_cache_dir()} and the "
                       "temporary folder)")


@functools.lru_cache(maxsize=None)
def _library(dtype: torch.dtype) -> ctypes.CDLL:
    scalar, suffix = SUFFIX[dtype]
    lib = ctypes.CDLL(str(_build(scalar, suffix)))
    forward = getattr(lib, f"deform_depthwise_forward_{suffix}")
    forward.argtypes = [_PTR] * 5 + [_INT] * 10
    forward.restype = None
    backward = getattr(lib, f"deform_depthwise_backward_{suffix}")
    backward.argtypes = [_PTR] * 9 + [_INT] * 10
    backward.restype = ctypes.c_int
    return lib


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """Whether the kernel builds and loads here (both dtypes), and why not."""
    try:
        for dtype in SUFFIX:
            _library(dtype)
    except (OSError, RuntimeError) as err:
        why = f"the fused CPU deformable-conv kernel is not available: {err}"
        log.warning("%s; the pure-torch reference runs instead (slower, same numbers)", why)
        return False, why
    return True, ""


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _DepthwiseDeform(torch.autograd.Function):
    """out = depthwise deformable conv of x (N, C, H, W); see deform_cpu.c for the layouts."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                weight: torch.Tensor, padding: int, dilation: int) -> torch.Tensor:
        n, c, h, w = x.shape
        kh, kw = weight.shape[-2:]
        lib = _library(x.dtype)
        suffix = SUFFIX[x.dtype][1]
        x_last = x.detach().permute(0, 2, 3, 1).contiguous()
        offset = offset.detach().contiguous()
        mask = None if mask is None else mask.detach().contiguous()
        taps = weight.detach().reshape(c, kh * kw).t().contiguous()
        out = torch.empty(n, h, w, c, dtype=x.dtype)
        geometry = (n, c, h, w, kh, kw, padding, dilation, blocks(n), torch.get_num_threads())
        getattr(lib, f"deform_depthwise_forward_{suffix}")(
            _ptr(x_last), _ptr(offset), _ptr(mask), _ptr(taps), _ptr(out), *geometry)
        ctx.save_for_backward(x_last, offset, mask, taps)
        ctx.geometry, ctx.weight_shape = geometry, weight.shape
        return out.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last in memory

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x_last, offset, mask, taps = ctx.saved_tensors
        n, c, h, w = ctx.geometry[:4]
        geometry = (*ctx.geometry[:-1], torch.get_num_threads())
        grad_last = grad_out.permute(0, 2, 3, 1).contiguous()
        grad_x = torch.empty_like(x_last)
        grad_offset = torch.empty_like(offset)
        grad_mask = None if mask is None else torch.empty_like(mask)
        grad_taps = torch.empty_like(taps)
        suffix = SUFFIX[x_last.dtype][1]
        failed = getattr(_library(x_last.dtype), f"deform_depthwise_backward_{suffix}")(
            _ptr(x_last), _ptr(offset), _ptr(mask), _ptr(taps), _ptr(grad_last), _ptr(grad_x),
            _ptr(grad_offset), _ptr(grad_mask), _ptr(grad_taps), *geometry)
        if failed:
            raise MemoryError("the fused deformable-conv backward could not allocate its "
                              "partial sums")
        grad_weight = grad_taps.t().reshape(ctx.weight_shape)
        return grad_x.permute(0, 3, 1, 2), grad_offset, grad_mask, grad_weight, None, None


def depthwise_deform(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                     weight: torch.Tensor, padding: int, dilation: int) -> torch.Tensor:
    """The depthwise deformable conv (no bias) by the fused kernel: x (N, C, H, W) on the CPU in
    float32 or float64, offset (N, 2 * taps, H, W), mask (N, taps, H, W) or None, weight
    (C, 1, kh, kw)."""
    return _DepthwiseDeform.apply(x, offset, mask, weight, padding, dilation)
