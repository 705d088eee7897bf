"""The fused CPU kernel of the depthwise deformable conv (ndmha/models/deform_cpu.c): what it
computes, its gradients, its independence of the thread count, and its build (cache, fallback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ndmha.errors import ConfigError
from ndmha.models import deform_cpu
from ndmha.models.layers import DeformConv2d, _torch_deform, resolve_backend

pytestmark = pytest.mark.skipif(not deform_cpu.available()[0], reason=deform_cpu.available()[1])


def _inputs(n: int, c: int, h: int, w: int, taps: int, dtype: torch.dtype, spread: float = 1.5):
    g = torch.Generator().manual_seed(n * 100 + c)
    x = torch.randn(n, c, h, w, dtype=dtype, generator=g)
    offset = torch.randn(n, 2 * taps, h, w, dtype=dtype, generator=g) * spread
    mask = torch.rand(n, taps, h, w, dtype=dtype, generator=g) * 2
    weight = torch.randn(c, 1, int(taps ** 0.5), int(taps ** 0.5), dtype=dtype, generator=g)
    return [t.requires_grad_() for t in (x, offset, mask, weight)]


def test_zero_offsets_and_unit_modulation_are_a_depthwise_conv() -> None:
    """At the layer's start (offsets 0, modulation 1) every sample sits on a whole pixel: the
    kernel is a depthwise conv, to float64 rounding of 9-term sums (1e-15; a wrong tap order or
    a shifted grid differs by O(1))."""
    layer = DeformConv2d(5, 5, groups=5, backend="fused").double()
    x = torch.rand(2, 5, 9, 7, dtype=torch.float64)
    expected = F.conv2d(x, layer.weight, padding=1, groups=5)
    assert torch.allclose(layer(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (1, 1), (5, 1)])
@pytest.mark.parametrize("modulated", [True, False], ids=["DCNv2", "DCNv1"])
def test_kernel_geometries_agree_with_the_reference(kernel: int, dilation: int,
                                                    modulated: bool) -> None:
    """Every kernel size and dilation the layer accepts, samples across the border included
    (offsets of 1.5 px spread on 6 x 8 images): outputs and all four gradients within the
    backends' float64 tolerance (1e-10) of the grid_sample reference."""
    padding = dilation * (kernel - 1) // 2
    x, offset, mask, weight = _inputs(3, 4, 6, 8, kernel * kernel, torch.float64)
    mask_in = mask if modulated else None
    grads = []
    for fn in (_torch_deform, lambda *a: deform_cpu.depthwise_deform(*a[:4], *a[5:])):
        out = fn(x, offset, mask_in, weight, None, padding, dilation)
        wrt = [x, offset, weight] + ([mask] if modulated else [])
        grads.append([out, *torch.autograd.grad(out, wrt, torch.cos(out.detach()))])
    for ref, got in zip(*grads):
        assert torch.allclose(ref, got, rtol=0, atol=1e-10)


def test_gradients_match_finite_differences() -> None:
    """torch.autograd.gradcheck (float64, central differences) on every input: the hand-written
    backward is the derivative of the forward (samples off whole pixels, where the bilinear
    weights are smooth)."""
    x, offset, mask, weight = _inputs(2, 3, 5, 4, 9, torch.float64, spread=0.8)
    with torch.no_grad():  # keep every sample > 1e-3 px from a pixel line (the kinks)
        frac = offset - offset.floor()
        offset.add_(torch.where((frac < 1e-3) | (frac > 1 - 1e-3), 0.01, 0.0))
    assert torch.autograd.gradcheck(lambda *a: deform_cpu.depthwise_deform(*a, 1, 1),
                                    (x, offset, mask, weight), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch", [1, 2, 8])
def test_bitwise_the_same_for_any_thread_count(batch: int) -> None:
    """The work is cut by the batch alone (batch 1 and 2: row blocks with partial sums) and
    summed in a fixed order: float32 results equal bit for bit at 1, 2 and 3 threads."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            x, offset, mask, weight = _inputs(batch, 16, 20, 20, 9, torch.float32)
            out = deform_cpu.depthwise_deform(x, offset, mask, weight, 1, 1)
            results.append([out, *torch.autograd.grad(out, [x, offset, mask, weight],
                                                      torch.ones_like(out))])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@pytest.fixture
def fresh_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An empty kernel cache and no loaded library; the real ones are put back after."""
    monkeypatch.setenv("NDMHA_KERNEL_CACHE", str(tmp_path / "cache"))
    deform_cpu.available.cache_clear()
    deform_cpu._library.cache_clear()
    yield tmp_path / "cache"
    deform_cpu.available.cache_clear()
    deform_cpu._library.cache_clear()


def test_no_compiler_falls_back_to_the_reference(fresh_build: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a C compiler, auto runs the pure-torch reference on a CPU and says why; asking
    for the fused backend by name is a config error naming the key."""
    monkeypatch.setattr(deform_cpu, "_compiler", lambda: None)
    ok, why = deform_cpu.available()
    assert not ok and "no C compiler" in why
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ConfigError, match="ndmha.deform_backend: .*no C compiler"):
        DeformConv2d(4, 4, groups=4, backend="fused")


def test_a_failed_build_leaves_nothing_in_the_cache(fresh_build: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiler that fails: the reason is reported, no library (whole or half) is left."""
    monkeypatch.setenv("CC", "false")
    ok, why = deform_cpu.available()
    assert not ok and "failed" in why
    assert not list(fresh_build.glob("**/*.so"))


def test_built_once_and_rebuilt_when_the_source_changes(fresh_build: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    first = deform_cpu._build("float", "f32")
    stamp = first.stat().st_mtime_ns
    assert deform_cpu._build("float", "f32") == first and first.stat().st_mtime_ns == stamp
    edited = tmp_path / "deform_cpu.c"
    edited.write_text(deform_cpu.SOURCE.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(deform_cpu, "SOURCE", edited)
    second = deform_cpu._build("float", "f32")
    assert second != first and second.exists()
