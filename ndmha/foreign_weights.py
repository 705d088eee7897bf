"""Weights from elsewhere, read as data (the package's own files: :mod:`ndmha.model_files`): the
authors' released checkpoint and plain state dicts, turned into a ``model.pt`` of :mod:`ndmha`
without running anything they contain.

The release (shrutiphutke/NDMA_Facial_Inpainting) saves its generator, ``Luna_Net`` of
``network_luna_bottleneck.py``, as a whole pickled module (``torch.save(net)``); its ``test.py``
loads it with ``torch.load(path)``, which today's torch refuses (``weights_only=True``) and which,
forced, would run whatever the pickle names. Here:

1. :func:`read_state` lists the file's globals without running anything
   (``torch.serialization.get_unsafe_globals_in_checkpoint``) and refuses, with one line naming
   it, any global that is neither one of the release's classes (matched by class name under any
   module path) nor a torch.nn module class of :data:`TORCH_MODULES`.
2. It then loads with ``weights_only=True``, every admitted class mapped to an inert holder
   (:class:`_Held`) that keeps only ``_parameters``, ``_buffers`` and ``_modules``: no class of
   the release or of torch.nn is constructed, no ``__setstate__`` of theirs runs. The holders'
   tensors are flattened to the names ``Luna_Net.state_dict()`` would give. A plain state dict
   (``module.`` prefixes of DataParallel stripped) is read the same way.
3. :func:`released_state_dict` maps those tensors to :class:`~ndmha.models.released.ReleasedNDMHA`
   strictly: every tensor is used or on :data:`DROPPED`, every shape is checked, and the first key
   that does not fit is named in one error. Not a rename: the release's gated conv holds two convs
   where ours holds one (feature channels, then gate channels); its attention temperature is
   (1, heads, 1, 1) where ours is (heads, 1, 1); its modulation convs and BatchNorms are built and
   never used.
4. The release works in BGR (``cv2.imread``, ``cv2.imwrite``); the first convs' image input
   channels and the heads' output channels are permuted, so the imported model takes and returns
   RGB like every model here (docs/architecture.md, "Importing the authors' checkpoint").
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ndmha.errors import ConfigError
from ndmha.hashing import sha256_file
from ndmha.models import architecture_options, build_model, count_parameters
from ndmha.model_files import is_model_file, read_ours, save_torch

log = logging.getLogger("ndmha")

#: the release's classes (network_luna_bottleneck.py), matched by class name under any module
RELEASE_CLASSES = ("Luna_Net", "GatedConv2dWithActivation", "GatedDeConv2dWithActivation",
                   "LunaTransformerEncoderLayer", "Nested_MDTA", "MDTA", "GDFN",
                   "DeformableConv2d", "res_bottleneck", "DownSample", "UpSample")
#: torch.nn module classes a pickled Luna_Net holds, held the same way (never constructed)
TORCH_MODULES = tuple(f"torch.nn.modules.{name}" for name in (
    "conv.Conv2d", "activation.LeakyReLU", "activation.Sigmoid", "activation.GELU",
    "activation.ReLU", "batchnorm.BatchNorm2d", "normalization.LayerNorm",
    "container.Sequential", "container.ModuleList", "pixelshuffle.PixelShuffle",
    "pixelshuffle.PixelUnshuffle", "linear.Identity"))
#: what the release builds and never uses, dropped knowingly: the BatchNorm of every gated conv
#: (``batch_norm=False`` everywhere) and the modulation conv of every deformable conv (computed,
#: never passed to ``deform_conv2d``)
DROPPED = (r"\.batch_norm2d\.(weight|bias|running_mean|running_var|num_batches_tracked)$",
           r"\.modulator_conv\.(weight|bias)$")
PROVENANCE = "imported, not trained here"
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w.]*$")


class CheckpointError(ConfigError):
    """A model file that cannot be imported: the message names the file and what is wrong."""


class _Held:
    """An inert stand-in for a pickled module: keeps its parameters, buffers and submodules,
    nothing else, and has no behaviour."""

    qualified = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.parameters = dict(state.get("_parameters") or {})
        self.buffers = dict(state.get("_buffers") or {})
        self.modules = dict(state.get("_modules") or {})


def _holder(qualified: str) -> type:
    return type(qualified.rsplit(".", 1)[-1], (_Held,), {"qualified": qualified})


def _admitted(name: str) -> bool:
    module, _, cls = name.rpartition(".")
    return name in TORCH_MODULES or (cls in RELEASE_CLASSES and bool(_IDENTIFIER.match(module)))


def _flatten(held: _Held, prefix: str = "", into: dict | None = None) -> dict[str, torch.Tensor]:
    """``state_dict()``'s names and tensors of a held module tree (shared submodules, such as
    the release's one LeakyReLU, hold no tensors)."""
    into = {} if into is None else into
    for name, tensor in {**held.parameters, **held.buffers}.items():
        if tensor is not None:
            into[prefix + name] = tensor.detach()
    for name, child in held.modules.items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", into)
    return into


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a released checkpoint (a whole pickled module, or a state dict, possibly
    under ``state_dict`` and with DataParallel's ``module.`` prefix) and what the file held
    (``"module Luna_Net"`` or ``"state dict"``). Nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as error:  # a legacy (pre-1.6) or damaged file: the scan cannot read it
        raise CheckpointError(f"{path}: not a torch zip checkpoint that can be scanned without "
                              f"running it ({type(error).__name__}: {error})") from None
    refused = [n for n in names if not _admitted(n)]
    if refused:
        raise CheckpointError(f"{path}: refused: the file names {refused[0]!r}, which is neither "
                              "one of the release's classes nor a torch.nn module; nothing was "
                              "loaded or run" + (f" ({len(refused) - 1} more refused)"
                                                 if len(refused) > 1 else ""))
    holders = [(_holder(n), n) for n in names]
    try:
        with torch.serialization.safe_globals(holders):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot be read as weights ({type(error).__name__}: "
                              f"{error})") from None
    if isinstance(obj, _Held):
        return _flatten(obj), f"module {obj.qualified}"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor)
                                                  for v in obj.values())):
        raise CheckpointError(f"{path}: holds neither a module nor a state dict of tensors "
                              f"(found {type(obj).__name__})")
    strip = all(k.startswith("module.") for k in obj)
    return {(k[len("module."):] if strip else k): v for k, v in obj.items()}, "state dict"


# ---------------------------------------------------------------------------------------------
# The release's names -> ReleasedNDMHA's

def _stage_prefixes() -> list[tuple[str, str, str]]:
    """(release prefix, our prefix, what it is) for every layer of Luna_Net."""
    layers = []
    for ours, theirs in (("coarse", ""), ("fine", "p2_")):
        layers.append((f"{theirs}Conv1", f"{ours}.encoder.stem", "gated"))
        layers += [(f"{theirs}Conv{i + 2}", f"{ours}.encoder.down.{i}", "gated") for i in range(4)]
        layers += [(f"{theirs}dil_conv{i + 1}", f"{ours}.bottleneck.{i}", "gated")
                   for i in range(4)]
        layers += [(f"{theirs}Up{5 - i}.conv2d", f"{ours}.up.{i}.conv", "gated") for i in range(4)]
        layers += [(f"{theirs}Up_conv{5 - i}", f"{ours}.fuse.{i}", "gated") for i in range(4)]
        layers.append((f"{theirs}Conv_1x1", f"{ours}.head", "conv"))
    layers += [(f"gmlp_attn{i + 1}", f"fine.attend.{i}", "ndmhal") for i in range(4)]
    return layers


#: inside one LunaTransformerEncoderLayer -> inside our NDMHAL (post-norm): module paths
_NDMHAL = {
    "packed_context_layer_norm": "norm_packed.norm",
    "unpacked_context_layer_norm": "norm_x.norm",
    "feed_forward_layer_norm": "norm_ff.norm",
    "feed_forward.project_in": "feed_forward.expand",
    "feed_forward.conv": "feed_forward.depthwise",
    "feed_forward.project_out": "feed_forward.project",
    **{f"luna_attention.{name}_attention{theirs}": f"{name}{ours}"
       for name in ("pack", "unpack")
       for theirs, ours in (("", ""),  # the attention's own tensor: its temperature
                            (".kv", ".kv.0"), (".kv_conv.offset_conv", ".kv.1.offset"),
                            (".kv_conv.regular_conv", ".kv.1"),  # the deformable conv's weight
                            (".project_out", ".project"))},
}


def _target(key: str) -> tuple[str, str]:
    """(our key, how: copy | feature | gate | temperature | drop) of one release key; an
    unknown key raises KeyError."""
    if any(re.search(pattern, key) for pattern in DROPPED):
        return "", "drop"
    for theirs, ours, what in _stage_prefixes():
        if not key.startswith(theirs + "."):
            continue
        module, _, leaf = key[len(theirs) + 1:].rpartition(".")
        if what == "gated" and module in ("conv2d", "mask_conv2d") and leaf in ("weight", "bias"):
            return f"{ours}.conv.{leaf}", "feature" if module == "conv2d" else "gate"
        if what == "conv" and not module and leaf in ("weight", "bias"):
            return f"{ours}.{leaf}", "copy"
        if what == "ndmhal" and module in _NDMHAL:
            if leaf == "temperature" and module.endswith("_attention"):
                return f"{ours}.{_NDMHAL[module]}.temperature", "temperature"
            if leaf in ("weight", "bias") and not module.endswith("_attention"):
                return f"{ours}.{_NDMHAL[module]}.{leaf}", "copy"
        break
    raise KeyError(key)


def release_shape(state: dict[str, torch.Tensor], path: str | Path) -> dict[str, Any]:
    """The options of ReleasedNDMHA that the tensors imply: width factor (from the first conv)
    and heads (from the first temperature); the expansion is checked by the shapes."""
    try:
        width = state["Conv1.conv2d.weight"].shape[0]
        heads = state["gmlp_attn1.luna_attention.pack_attention.temperature"].numel()
    except KeyError as missing:
        raise CheckpointError(f"{path}: not the released network: no tensor {missing}") from None
    if 64 % width:
        raise CheckpointError(f"{path}: Conv1.conv2d.weight has {width} output channels, not "
                              "64 / factor for an integer factor")
    return {"factor": 64 // width, "heads": int(heads)}


def released_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                        path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The release's tensors as ``target``'s keys (a ReleasedNDMHA's state dict, for its names
    and shapes), strictly: an unknown key, a shape that does not fit, or a tensor of ``target``
    the file does not fill is one error naming the key."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        try:
            ours, how = _target(key)
        except KeyError:
            raise CheckpointError(f"{path}: unknown key {key!r}: not a tensor of the released "
                                  "network (Luna_Net)") from None
        if how == "drop":
            continue
        if ours not in target:
            raise CheckpointError(f"{path}: key {key!r} maps to {ours!r}, which this "
                                  "ReleasedNDMHA does not have")
        tensor = state[key]
        if how in ("feature", "gate"):
            halves.setdefault(ours, {})[how] = tensor
            want = (target[ours].shape[0] // 2, *target[ours].shape[1:])
        elif how == "temperature":
            want = (1, target[ours].shape[0], 1, 1)
        else:
            want = tuple(target[ours].shape)
        if tuple(tensor.shape) != tuple(want):
            raise CheckpointError(f"{path}: key {key!r} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(want)} (for {ours!r})")
        if how == "temperature":
            out[ours] = tensor.reshape(target[ours].shape)
        elif how == "copy":
            out[ours] = tensor
    for ours, parts in halves.items():
        if set(parts) != {"feature", "gate"}:
            lacking = "mask_conv2d" if "feature" in parts else "conv2d"
            raise CheckpointError(f"{path}: the gated conv for {ours!r} lacks its {lacking} "
                                  "tensor")
        out[ours] = torch.cat([parts["feature"], parts["gate"]], dim=0)
    missing = [k for k in target if k not in out]
    if missing:
        raise CheckpointError(f"{path}: the file has no tensor for {missing[0]!r}"
                              + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""))
    return {k: out[k].to(target[k].dtype).clone() for k in target}


#: the first convs' image channels (input) and the heads (output): BGR <-> RGB
_IMAGE_INPUTS = ("coarse.encoder.stem.conv.weight", "fine.encoder.stem.conv.weight")
_HEADS = ("coarse.head.weight", "coarse.head.bias", "fine.head.weight", "fine.head.bias")


def bgr_to_rgb(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BGR model's weights as the same model taking and returning RGB: the image input
    channels (0..2 of the six) of both first convs and the output channels of both heads
    reversed. Exact: a permutation of a linear layer's inputs or outputs."""
    state = dict(state)
    for key in _IMAGE_INPUTS:
        w = state[key]
        state[key] = torch.cat([w[:, [2, 1, 0]], w[:, 3:]], dim=1)
    for key in _HEADS:
        state[key] = state[key][[2, 1, 0]]
    return state


def released_weights(src: str | Path, hole_fill: str = "black", channel_order: str = "bgr"
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, int]:
    """The authors' checkpoint as ReleasedNDMHA's (options, state dict, what the file held,
    tensors dropped as unused), fed the release's way (``mask_range: signed``, ``hole_fill``)
    and, for ``channel_order: bgr`` (the release's), permuted to take and return RGB."""
    if channel_order not in ("bgr", "rgb"):
        raise ConfigError(f"channel_order: 'bgr' or 'rgb', got {channel_order!r}")
    state, held = read_state(src)
    options = {**release_shape(state, src), "mask_range": "signed", "hole_fill": hole_fill}
    target = build_model("ndmha_released", options, "torch").state_dict()
    weights = released_state_dict(state, target, src)
    dropped = sum(1 for k in state if _target(k)[1] == "drop")
    return options, bgr_to_rgb(weights) if channel_order == "bgr" else weights, held, dropped


def import_released(src: str | Path, out: str | Path, hole_fill: str = "black",
                    channel_order: str = "bgr", experiment: str = "ndmha_released_imported",
                    image_size: int | None = None, expected: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """The authors' checkpoint ``src`` as a ``model.pt`` of ``ndmha_released`` at ``out`` (see
    :func:`released_weights`), with its provenance: the source's name and sha256, imported, not
    trained here. ``expected``: options an experiment sets, checked against the file's before
    anything is written. Returns what it wrote beside the weights."""
    options, weights, held, dropped = released_weights(src, hole_fill, channel_order)
    _check_options(options, expected or {}, f"experiments.{experiment}.options", Path(src))
    model = build_model("ndmha_released", options, "torch")
    model.load_state_dict(weights)
    meta = {"architecture": "ndmha_released", "options": options, "experiment": experiment,
            "kind": "imported", "parameters": count_parameters(model), "epochs": 0,
            "budget": {}, "test_loss": None, "warnings": size_warnings(image_size),
            "provenance": {"imported": PROVENANCE, "source_file": Path(src).name,
                           "source_sha256": sha256_file(src), "source_held": held,
                           "channel_order": channel_order, "dropped_tensors": dropped}}
    save_torch({**meta, "state_dict": model.state_dict()}, out)
    log.info("imported %s (%s, %d tensors dropped as unused) as %s", src, held, dropped, out)
    return meta


def size_warnings(image_size: int | None) -> list[str]:
    if image_size is None or image_size == 256:
        return []
    return [f"the authors' checkpoint was trained at 256 px; scored here at {image_size} px"]


def import_weights(src: str | Path, out: str | Path, experiment: str, architecture: str,
                   options: dict[str, Any], image_size: int | None = None) -> dict[str, Any]:
    """An imported experiment's ``model.pt``: a model.pt of this project, copied under the
    workflow's experiment name (which wins over the stored one) and marked imported; or, for
    ``ndmha_released``, the authors' checkpoint through :func:`import_released` (``options``
    may set ``hole_fill``)."""
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"experiments.{experiment}.weights: no such file {src}")
    state = read_ours(src)
    if state is None:
        if architecture != "ndmha_released":
            raise CheckpointError(f"experiments.{experiment}.weights: {src} is not a model.pt "
                                  "of this project, and only ndmha_released imports the "
                                  "authors' checkpoint")
        return import_released(src, out, options.get("hole_fill", "black"), "bgr", experiment,
                               image_size, expected=options)
    if not is_model_file(state):
        raise CheckpointError(f"experiments.{experiment}.weights: {src} is a training "
                              "checkpoint; give the model.pt the train rule wrote")
    if state["architecture"] != architecture:
        raise CheckpointError(f"experiments.{experiment}.architecture: {src} holds "
                              f"{state['architecture']!r}, not {architecture!r}")
    _check_options(state.get("options") or {}, options, f"experiments.{experiment}.options", src)
    provenance = {**state.get("provenance", {}), "imported": PROVENANCE,
                  "source_file": src.name, "source_sha256": sha256_file(src),
                  "stored_experiment": state.get("experiment")}
    budget = state.get("budget", {})
    state.update(experiment=experiment, kind="imported", provenance=provenance, budget={},
                 source_budget=budget)
    save_torch(state, out)
    return state


def _check_options(stored: dict[str, Any], given: dict[str, Any], key: str, src: Path,
                   defaults: dict[str, Any] | None = None) -> None:
    """The options an experiment gives must be the file's: those it gives (an import, which
    takes the rest from the file), or all of them with ``defaults`` filling both sides (a
    fine-tuning run, which builds its model from its own options)."""
    if defaults is not None:
        stored, given = {**defaults, **stored}, {**defaults, **given}
    differ = {k: v for k, v in given.items() if k not in stored or stored[k] != v}
    if differ:
        raise CheckpointError(f"{key}: {src} was built with {stored}; the experiment sets "
                              f"{differ}")


def init_weights(path: str | Path, architecture: str, options: dict[str, Any],
                 key: str = "train.init_from") -> dict[str, Any]:
    """The weights a fine-tuning run starts from: ``model`` (the generator's state dict),
    ``discriminator`` (a training checkpoint's, else None: it starts fresh) and ``source`` (file
    name, sha256, what it was, the steps it had been trained for). A model.pt or training
    checkpoint of this project, or for ``ndmha_released`` the authors' checkpoint (options may
    set ``hole_fill``). The optimizers always start fresh."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}: no such file {path}")
    source = {"file": path.name, "sha256": sha256_file(path)}
    state = read_ours(path)
    if state is None:
        if architecture != "ndmha_released":
            raise CheckpointError(f"{key}: {path} is not a model.pt of this project (only "
                                  "ndmha_released starts from the authors' checkpoint)")
        stored, weights, held, _ = released_weights(path, options.get("hole_fill", "black"))
        _check_options(stored, options, key, path, architecture_options(architecture))
        return {"model": weights, "discriminator": None,
                "source": {**source, "was": f"the authors' checkpoint ({held})",
                           "steps_before": None}}
    if is_model_file(state):
        stored_arch, stored_options = state["architecture"], state.get("options") or {}
        weights, discriminator, steps = (state["state_dict"], None,
                                         state.get("budget", {}).get("steps"))
        was = f"model.pt ({state.get('kind', 'trained')})"
    else:  # a training checkpoint: the generator and, when it has one, the discriminator
        stored_arch, stored_options = architecture, options
        weights, discriminator = state["model"], state.get("discriminator")
        steps = int(state["history"][-1]["steps"]) if state.get("history") else None
        was = "training checkpoint"
    if stored_arch != architecture:
        raise CheckpointError(f"{key}: {path} holds {stored_arch!r}, not {architecture!r}")
    _check_options(stored_options, options, key, path, architecture_options(architecture))
    return {"model": weights, "discriminator": discriminator,
            "source": {**source, "was": was, "steps_before": steps}}
