"""Named, deterministic image -> feature maps for FID, KID and the memorisation check.

Every FID/KID number depends on the network that produced the features, so every extractor carries a
name, and the names pin the weights by content hash::

    torchxrayvision-densenet121-res224-chex:<sha256[:12]>   the paper's FID features (:mod:`raygen.metrics.xrv`)
    raygen-classifier-penultimate:<ckpt sha256[:12]>        our own classifier (module_extractor)
    torchvision-densenet121:<file>:<sha256[:12]>            the VQ-GAN's reconstruction FID (ImageNet weights)
    inception-v3:<file sha256[:12]>                         the usual natural-image FID (local file only)

This machine is offline, so nothing is downloaded: every extractor reads a *local* weight file. Without
one the caller reports the FID as not computed with the reason; it is never computed on random-weight
features, which would be a number without meaning.

Pixel convention: extractors take (B, C, H, W) float images in [0, 1] (display convention) and return
(B, F) float64 features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from raygen.io import sha256_file
from raygen.models.releases import TORCHVISION_DENSENET121

__all__ = [
    "FeatureExtractor",
    "TORCHVISION_DENSENET121",
    "densenet121_extractor",
    "extract_features",
    "file_sha12",
    "find_densenet121_weights",
    "inception_extractor",
    "module_extractor",
    "rename_legacy_densenet_keys",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception weights


@dataclass(frozen=True)
class FeatureExtractor:
    """A named, deterministic image -> feature map: ``fn`` takes (B, C, H, W) [0, 1], returns (B, D)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def file_sha12(path: str | Path) -> str:
    """First 12 hex digits of a file's SHA-256 (streamed): pins the weights in extractor names."""
    return sha256_file(path)[:12]


def rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's released DenseNet files use old names (``norm.1``); map them to ``norm1``."""
    import re

    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        match = pattern.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


# --------------------------------------------------------------------------------------------
# torchvision DenseNet-121 (ImageNet weights, the VQ-GAN's reconstruction FID)


def find_densenet121_weights(path: str | Path | None = None) -> Path | None:
    """The given file, else torchvision's ImageNet DenseNet-121 in the torch hub cache, else None."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"FID weights not found: {path} (a torchvision DenseNet-121 state dict, e.g. "
                f"{TORCHVISION_DENSENET121} from torchvision's DenseNet121_Weights.IMAGENET1K_V1)"
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_DENSENET121
    return cached if cached.is_file() else None


def densenet121_extractor(weights: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """1024-d global-average-pooled DenseNet-121 features (torchvision architecture) from a local
    state dict. Input grey/RGB [0, 1] -> 3 channels, bilinear resize to 224x224, ImageNet
    normalisation. Name: ``torchvision-densenet121:<file>:<sha256[:12]>``."""
    import torchvision

    weights = Path(weights)
    digest = sha256_file(weights)[:12]
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = rename_legacy_densenet_keys(state)
    net = torchvision.models.densenet121(weights=None)
    net.load_state_dict(state, strict=True)
    features = net.features.eval().requires_grad_(False).to(device)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def fn(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        h = F.relu(features((x - mean) / std))  # (B, 1024, 7, 7)
        return F.adaptive_avg_pool2d(h, 1).flatten(1).double().cpu()  # (B, 1024)

    return FeatureExtractor(name=f"torchvision-densenet121:{weights.name}:{digest}", fn=fn)


# --------------------------------------------------------------------------------------------
# Any module; Inception from a local file


def module_extractor(
    module: nn.Module,
    name: str,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> FeatureExtractor:
    """Wrap any module mapping (B, C, H, W) -> (B, ...) features (e.g. the classifier's penultimate
    layer, named ``raygen-classifier-penultimate:<ckpt sha12>`` by the caller). ``preprocess`` maps the
    [0, 1] (B, 1, H, W) input to what the module expects. The module is put in eval mode, frozen."""
    module = module.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def fn(images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(batch_size):
            x = chunk.to(device).float()
            out.append(module(preprocess(x) if preprocess else x).flatten(1).double().cpu())
        return torch.cat(out)

    return FeatureExtractor(name=name, fn=fn)


def inception_extractor(path: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The FID Inception-v3 (2048-d pool features) from a LOCAL torch-fidelity weight file.

    Needs ``torch-fidelity`` (torchmetrics' FID backend; not a RayGen dependency). Grey [0, 1] input is
    repeated to 3 channels and passed as uint8 [0, 255], the convention of that network. Name:
    ``inception-v3:<sha12>``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found: {path}. Get {INCEPTION_FILE} from "
            f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}; "
            "nothing downloads here."
        )
    try:  # torchmetrics imports without torch-fidelity but raises when the network is built
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except ImportError as err:
        raise ImportError("the Inception extractor needs `pip install torch-fidelity`") from err
    to_uint8 = lambda x: x.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)  # noqa: E731
    return module_extractor(net, f"inception-v3:{file_sha12(path)}", preprocess=to_uint8, device=device)


def extract_features(extractor: FeatureExtractor, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Run ``extractor`` over an iterable of (B, 1, H, W) [0, 1] batches: (N, F) float64 array."""
    return np.concatenate([np.asarray(extractor(b), dtype=np.float64) for b in batches])
