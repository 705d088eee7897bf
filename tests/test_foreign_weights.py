"""Importing the authors' checkpoint: a whole pickled module read as data, mapped strictly.

The release's classes are rebuilt below from the structure of its ``network_luna_bottleneck.py``
(class names, attribute names and forward computation; written here, not copied), their
``__module__`` set to ``network_luna_bottleneck`` so that ``torch.save`` pickles them under the
release's names, as the authors' file holds them.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ndmha.foreign_weights import CheckpointError, read_state, released_state_dict
from ndmha.model_files import load_model
from ndmha.models import build_model

RELEASE_MODULE = "network_luna_bottleneck"
SHARED_LEAKY = nn.LeakyReLU(0.2, inplace=True)  # one default instance, as the release's signature


def _channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return norm(x.reshape(b, c, -1).transpose(-2, -1)).transpose(-2, -1).reshape(b, c, h, w)


class GatedConv2dWithActivation(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, activation=SHARED_LEAKY):
        super().__init__()
        self.batch_norm = False
        self.activation = activation
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride, padding)
        self.mask_conv2d = nn.Conv2d(cin, cout, kernel_size, stride, padding)
        self.batch_norm2d = nn.BatchNorm2d(cout)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.activation(self.conv2d(x)) * self.sigmoid(self.mask_conv2d(x))


class GatedDeConv2dWithActivation(nn.Module):
    def __init__(self, scale_factor, cin, cout, kernel_size, padding=0):
        super().__init__()
        self.conv2d = GatedConv2dWithActivation(cin, cout, kernel_size, 1, padding)
        self.scale_factor = scale_factor

    def forward(self, x):
        return self.conv2d(F.interpolate(x, scale_factor=2))


class DeformableConv2d(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.stride, self.padding = (1, 1), 1
        self.offset_conv = nn.Conv2d(cin, 18, 3, padding=1)
        self.modulator_conv = nn.Conv2d(cin, 9, 3, padding=1)
        self.regular_conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x):
        offset = self.offset_conv(x)
        _unused = 2.0 * torch.sigmoid(self.modulator_conv(x))  # computed, never passed on
        return torchvision.ops.deform_conv2d(x, offset, self.regular_conv.weight, None,
                                             padding=self.padding, stride=self.stride)


class MDTA(nn.Module):
    def __init__(self, channels, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.kv = nn.Conv2d(channels, 2 * channels, 1, bias=False)
        self.kv_conv = DeformableConv2d(2 * channels, 2 * channels)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x, q):
        b, c, h, w = x.shape
        k, v = self.kv_conv(self.kv(x)).chunk(2, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, -1, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
        return self.project_out((attn @ v).reshape(b, -1, h, w)), q


class Nested_MDTA(nn.Module):
    def __init__(self, channels, num_heads):
        super().__init__()
        self.pack_attention = MDTA(channels, num_heads)
        self.unpack_attention = MDTA(channels, num_heads)

    def forward(self, x, p):
        packed, query = self.pack_attention(x, p)
        unpacked, _ = self.unpack_attention(packed, query)
        return unpacked, packed


class GDFN(nn.Module):
    def __init__(self, channels, expansion_factor):
        super().__init__()
        hidden = int(channels * expansion_factor)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x):
        a, b = self.conv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class LunaTransformerEncoderLayer(nn.Module):
    def __init__(self, channels, num_heads, expansion_factor):
        super().__init__()
        self.luna_attention = Nested_MDTA(channels, num_heads)
        self.feed_forward = GDFN(channels, expansion_factor)
        self.packed_context_layer_norm = nn.LayerNorm(channels)
        self.unpacked_context_layer_norm = nn.LayerNorm(channels)
        self.feed_forward_layer_norm = nn.LayerNorm(channels)

    def forward(self, x, p):
        unpacked, packed = self.luna_attention(x, p)
        packed = _channel_norm(self.packed_context_layer_norm, packed + p)
        unpacked = _channel_norm(self.unpacked_context_layer_norm, unpacked + x)
        out = _channel_norm(self.feed_forward_layer_norm, self.feed_forward(unpacked) + unpacked)
        return out, packed


class Luna_Net(nn.Module):
    def __init__(self, in_channels, out_channels, factor):
        super().__init__()
        w = [c // factor for c in (64, 128, 256, 512, 1024)]
        for p in ("", "p2_"):
            setattr(self, f"{p}Conv1", GatedConv2dWithActivation(in_channels, w[0], 3, 1, 1))
            for i in range(4):
                setattr(self, f"{p}Conv{i + 2}", GatedConv2dWithActivation(w[i], w[i + 1], 3, 2, 1))
                setattr(self, f"{p}dil_conv{i + 1}", GatedConv2dWithActivation(w[4], w[4], 3, 1, 1))
            for i, level in enumerate((5, 4, 3, 2)):
                big, small = w[4 - i], w[3 - i]
                setattr(self, f"{p}Up{level}", GatedDeConv2dWithActivation(2, big, small, 3, 1))
                if p:
                    setattr(self, f"gmlp_attn{i + 1}", LunaTransformerEncoderLayer(small, 8, 2.33))
                fuse_in = small if (not p and level == 2) else 2 * small
                setattr(self, f"{p}Up_conv{level}",
                        GatedConv2dWithActivation(fuse_in, small, 3, 1, 1))
            setattr(self, f"{p}Conv_1x1", nn.Conv2d(w[0], out_channels, 1))

    def _encode(self, p, x):
        features = [getattr(self, f"{p}Conv1")(x)]
        for i in range(4):
            features.append(getattr(self, f"{p}Conv{i + 2}")(features[-1]))
        y = features[-1]
        for i in range(4):
            y = getattr(self, f"{p}dil_conv{i + 1}")(y)
        return features, y

    def forward(self, in1, in2):
        features, y = self._encode("", torch.cat((in1, in2), dim=1))
        for i, level in enumerate((5, 4, 3, 2)):
            y = getattr(self, f"Up{level}")(y)
            if level != 2:
                y = torch.cat((features[3 - i], y), dim=1)
            y = getattr(self, f"Up_conv{level}")(y)
        d1 = self.Conv_1x1(y)
        pasted = in1 * (1 - in2) + d1 * in2
        features, y = self._encode("p2_", torch.cat((pasted, in2), dim=1))
        for i, level in enumerate((5, 4, 3, 2)):
            y = getattr(self, f"p2_Up{level}")(y)
            y = torch.cat(getattr(self, f"gmlp_attn{i + 1}")(y, features[3 - i]), dim=1)
            y = getattr(self, f"p2_Up_conv{level}")(y)
        return d1, self.p2_Conv_1x1(y)


RELEASE_CLASSES = (GatedConv2dWithActivation, GatedDeConv2dWithActivation, DeformableConv2d,
                   MDTA, Nested_MDTA, GDFN, LunaTransformerEncoderLayer, Luna_Net)
for _cls in RELEASE_CLASSES:
    _cls.__module__ = RELEASE_MODULE


def _release_net(seed: int = 0) -> Luna_Net:
    """Luna_Net at factor 8 with every tensor random, offset convs included (the release
    zero-initialises them; trained weights are not), so a wrong offset mapping shows. Conv
    weights of std gain / sqrt(fan-in), so activations stay O(1) through the 30-odd layers (with
    a fixed std they reach 1e10 at the bottleneck, where float64's ulps are 1e-6); offsets of
    about half a pixel. Every value is a float32 one: the imported model.pt holds float32
    weights (as trained ones do), so the float64 comparison then starts from equal weights."""
    torch.manual_seed(seed)
    net = Luna_Net(6, 3, 8).double()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not tensor.is_floating_point() or "running" in name:
                continue
            if tensor.dim() == 4:  # a conv: (out, in / groups, k, k)
                fan_in = tensor[0].numel()
                gain = 0.5 if "offset_conv" in name else 1.4
                tensor.copy_(torch.randn_like(tensor) * gain / fan_in ** 0.5)
            else:  # biases, LayerNorm affines, temperatures
                base = 1.0 if name.endswith(("norm.weight", "temperature")) else 0.0
                tensor.copy_(base + 0.1 * torch.randn_like(tensor))
            tensor.copy_(tensor.float().double())
    return net.eval()


def _save_as_released(net: nn.Module, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.save(net)`` as the authors did: pickle finds the classes in their module, which
    exists here only while saving."""
    module = types.ModuleType(RELEASE_MODULE)
    for cls in RELEASE_CLASSES:
        setattr(module, cls.__name__, cls)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, RELEASE_MODULE, module)
        torch.save(net, path)


def _import(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``ndmha import-released`` in a fresh interpreter, where no module named
    network_luna_bottleneck exists (the working directory holds none)."""
    return subprocess.run([sys.executable, "-m", "ndmha", "import-released", str(src), str(out),
                           *extra], capture_output=True, text=True, cwd=out.parent)


def test_the_imported_network_gives_the_release_s_output(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    net = _release_net()
    src = tmp_path / "netG_model.pth"
    _save_as_released(net, src, monkeypatch)  # the whole module, as the authors saved it
    out = tmp_path / "imported" / "model.pt"
    out.parent.mkdir()
    done = _import(src, out)
    assert done.returncode == 0, done.stderr
    meta, model = load_model(out)
    assert meta["kind"] == "imported" and meta["options"]["factor"] == 8
    assert meta["provenance"]["source_file"] == "netG_model.pth"
    assert len(meta["provenance"]["source_sha256"]) == 64
    model = model.double()

    torch.manual_seed(1)
    size = 32
    rgb = torch.rand(2, 3, size, size, dtype=torch.float64)
    mask = (torch.rand(2, 1, size, size) > 0.6).double()
    corrupted = rgb * (1 - mask)  # our data: black holes
    # the release's way: BGR, [-1, 1], the mask signed and three channels
    bgr = (2 * corrupted - 1).flip(1)
    with torch.no_grad():
        _, theirs = net(bgr, (2 * mask - 1).expand(-1, 3, -1, -1))
        ours = model(corrupted, mask)
    expected = ((theirs + 1) / 2).flip(1)
    # float64: both compute the same sums in a different order (one conv of 2c outputs against
    # two of c; our torch deformable conv against torchvision's; q normalised once against
    # twice), so they differ by a few ulps per operation, ~1e-15 relative, through ~100 layers
    # whose LayerNorms and softmaxes amplify by at most ~1e2: 1e-9 is far above that and far
    # below what a wrong mapping gives (a swapped feature/gate pair or a channel left in BGR
    # moves outputs by > 1e-2).
    assert torch.allclose(ours, expected, atol=1e-9, rtol=0)
    assert (ours - expected).abs().max() < 1e-9
    assert (model(corrupted, mask) - ((net(2 * corrupted - 1, (2 * mask - 1).expand(-1, 3, -1, -1)
                                           )[1] + 1) / 2)).abs().max() > 1e-3  # BGR matters


class _Planted:
    """A pickled object whose unpickling would call ``open(path, 'w')``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    planted = tmp_path / "created_by_the_pickle"
    src = tmp_path / "evil.pth"
    torch.save({"Conv1.conv2d.weight": torch.zeros(1), "payload": _Planted(planted)}, src)
    assert not planted.exists()
    out = tmp_path / "model.pt"
    done = _import(src, out)
    assert done.returncode != 0
    assert "refused" in done.stderr and "'io.open'" in done.stderr  # open pickles as io.open
    assert not planted.exists() and not out.exists()
    with pytest.raises(CheckpointError, match="io.open"):
        read_state(src)
    assert not planted.exists()


def test_a_state_dict_is_mapped_strictly(tmp_path: Path) -> None:
    state = _release_net().state_dict()
    target = build_model("ndmha_released", {"factor": 8, "mask_range": "signed"},
                         "torch").double().state_dict()
    plain = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, plain)  # DataParallel's prefix
    read, held = read_state(plain)
    assert held == "state dict" and set(read) == set(state)
    mapped = released_state_dict(read, target, plain)
    assert set(mapped) == set(target)

    wrong = dict(state)
    wrong["p2_Up_conv3.mask_conv2d.weight"] = torch.zeros(3, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(CheckpointError, match=r"'p2_Up_conv3.mask_conv2d.weight' has shape"):
        released_state_dict(wrong, target)
    unknown = {**state, "gmlp_attn2.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unknown key 'gmlp_attn2.extra.weight'"):
        released_state_dict(unknown, target)
    missing = {k: v for k, v in state.items() if k != "Conv3.conv2d.bias"}
    with pytest.raises(CheckpointError, match=r"lacks its conv2d"):
        released_state_dict(missing, target)
