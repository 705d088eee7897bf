"""Metrics that need pretrained networks: LPIPS (lpips package) and FID / KID (torch-fidelity).

Both read their weights from files found by :mod:`ndmha.weights` (a path in the config, or
torch's hub cache) and checked against their publishers' hashes. A metric whose file is missing
or wrong is not computed: it reads ``n/a (weights not found: ...)``, never a number from random
weights; one switched off in the config (``off``) reads ``off``.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ndmha.weights import LPIPS_WEIGHTS, REGISTRY, locate

log = logging.getLogger("ndmha")

#: lpips backbone name -> the torchvision constructor whose ImageNet checkpoint it needs
LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}
#: the value of a metric switched off in the config
OFF = "off"
LPIPS_KEY = "evaluation.lpips.weights"
FID_KEY = "evaluation.fid.inception_weights"


def metric_weights(key: str, value: object, name: str) -> Path | str:
    """The checked file of a metric's config ``key``, or the text the metric reads instead:
    ``off``, or ``n/a (weights not found: ...)`` naming the file and the paths searched."""
    found = locate(key, value, REGISTRY[name])
    if found.off:
        return OFF
    if found.found:
        return found.path
    searched = ", ".join(str(p) for p in found.searched)
    text = f"n/a (weights not found: {found.problem}; searched {searched})"
    log.warning("%s: %s", key, text)
    return text


class LPIPSMetric:
    """LPIPS distance per image (lpips package, v0.1, its shipped linear heads).

    The backbone (AlexNet by default, or VGG16) is loaded from a local torchvision ImageNet
    checkpoint (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``) instead of downloaded.
    """

    def __init__(self, weights: str | Path, net: str = "alex", device: str | torch.device = "cpu"
                 ) -> None:
        import lpips
        import torchvision.models as tvm

        if net not in LPIPS_BACKBONES:
            raise ValueError(f"evaluation.lpips.net: must be one of {sorted(LPIPS_BACKBONES)}")
        with warnings.catch_warnings():  # lpips still passes torchvision's old `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        backbone = getattr(tvm, LPIPS_BACKBONES[net])(weights=None)
        backbone.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        features = backbone.features
        # lpips splits the torchvision `features` into slices whose children keep their indices
        for slice_ in (getattr(self.model.net, f"slice{i}") for i in range(1, 6)):
            for index, module in slice_.named_children():
                module.load_state_dict(features[int(index)].state_dict())
        self.model = self.model.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of (N, 3, H, W) tensors in [0, 1]."""
        out = self.model(pred.to(self.device), target.to(self.device), normalize=True)
        return out.flatten().double().cpu()


def lpips_metric(settings: dict[str, Any], device: str | torch.device = "cpu"
                 ) -> LPIPSMetric | str:
    """The LPIPS metric, or the text it reads instead (``off``, ``n/a ...``: metric_weights)."""
    net = settings.get("net", "alex")
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"evaluation.lpips.net: must be one of {sorted(LPIPS_BACKBONES)}")
    weights = metric_weights(LPIPS_KEY, settings.get("weights", ""), LPIPS_WEIGHTS[net])
    return weights if isinstance(weights, str) else LPIPSMetric(weights, net, device)


class ImageFiles(Dataset):
    """Image files read as uint8 RGB (3, H, W) tensors, as torch-fidelity wants them."""

    def __init__(self, paths: list[str | Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        import cv2

        from ndmha.io import read_image

        rgb = cv2.cvtColor(read_image(self.paths[index]), cv2.COLOR_BGR2RGB)
        return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def inception_features(paths: list[str | Path], weights: str | Path,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """Inception-v3 pool features (N, 2048) of image files: torch-fidelity's FID / KID extractor
    (``weights-inception-2015-12-05-6726825d.pth``, a checked local file), run once per image so that any
    subset's FID and KID (:func:`fid_kid`) reuse them."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    cuda = torch.device(device).type == "cuda"
    extractor = create_feature_extractor("inception-v3-compat", ["2048"], cuda=cuda,
                                         feature_extractor_weights_path=str(weights),
                                         verbose=False)
    return get_featuresdict_from_dataset(ImageFiles(paths), extractor, 32, cuda,
                                         save_cpu_ram=True, verbose=False)["2048"]


def clean_features(paths: list[str | Path], weights: str | Path,
                   device: str | torch.device = "cpu", batch_size: int = 32) -> torch.Tensor:
    """Inception-v3 pool features (N, 2048) by clean-fid's recipe (Parmar et al., CVPR 2022):
    each image resized to 299 px by PIL's bicubic on float values, not quantised
    (``cleanfid.resize.build_resizer("clean")``), then pytorch-fid's Inception-v3, clean-fid's
    own port (``cleanfid.inception_pytorch``), its weights read as a state dict from the checked
    file (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: the bytes torch-fidelity loads).
    clean-fid's "clean" mode runs a TorchScript copy of the network instead: a downloaded
    program, which this project does not run. The FID of these features differs from
    torch-fidelity's by the resize (torch-fidelity's TF1 bilinear on uint8) and the input scaling
    (2x - 1 against (x - 128) / 128)."""
    import numpy as np
    from cleanfid.resize import build_resizer

    model, device = _clean_inception(str(weights), str(device)), torch.device(device)
    resize, images = build_resizer("clean"), ImageFiles(paths)
    features = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([resize(images[i].permute(1, 2, 0).numpy())
                          for i in range(start, min(start + batch_size, len(images)))])
        batch = torch.from_numpy(batch.transpose(0, 3, 1, 2)).float().to(device)
        with torch.no_grad():
            features.append(model(batch / 255)[0].squeeze(-1).squeeze(-1).double().cpu())
    return torch.cat(features)


@functools.lru_cache(maxsize=1)
def _clean_inception(weights: str, device: str) -> torch.nn.Module:
    """clean-fid's pytorch-fid network with the checked file's state dict, built once for a
    scoring job's two image sets (its generated and its real images)."""
    from unittest import mock

    import cleanfid.inception_pytorch as cip

    def state(*_args: Any, **_kwargs: Any) -> dict:  # the checked file, as data
        return torch.load(weights, map_location="cpu", weights_only=True)

    with mock.patch.object(cip, "load_state_dict_from_url", state):
        return cip.InceptionV3(output_blocks=[3], resize_input=False).to(device).eval()


def clean_fid(generated: torch.Tensor, real: torch.Tensor) -> float:
    """FID of two sets of :func:`clean_features` by clean-fid's formula
    (``cleanfid.fid.fid_from_feats``); NaN with fewer than two images."""
    if min(len(generated), len(real)) < 2:
        return math.nan
    from cleanfid.fid import fid_from_feats

    return float(fid_from_feats(generated.numpy(), real.numpy()))


def fid_kid(generated: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """FID and KID (mean, std) between two sets of :func:`inception_features`, with
    torch-fidelity's own formulas and defaults. KID's subset size is capped at the number of
    images; with fewer than two images all three are NaN."""
    if min(len(generated), len(real)) < 2:
        return {"fid": math.nan, "kid": math.nan, "kid_std": math.nan}
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    fid = fid_statistics_to_metric(fid_features_to_statistics(generated),
                                   fid_features_to_statistics(real), verbose=False)
    kid = kid_features_to_metric(generated, real, verbose=False,
                                 kid_subset_size=min(1000, len(generated), len(real)))
    return {"fid": float(fid[KEY_METRIC_FID]), "kid": float(kid[KEY_METRIC_KID_MEAN]),
            "kid_std": float(kid[KEY_METRIC_KID_STD])}
