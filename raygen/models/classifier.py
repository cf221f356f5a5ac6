"""The downstream classifier: torchvision's DenseNet-121 with a 1- or 3-channel stem and a 10-way head.

The network takes RayGen's generator convention, (B, C, R, R) float images in [-1, 1] (see
raygen.data.images), and maps them to what its initial weights were trained on with a fixed,
non-learned affine map (``input_norm``):

    signed    identity                       training from scratch
    imagenet  ImageNet mean / std on [0, 1]  CheXNet (an ImageNet-initialised torchvision DenseNet-121)
    xrv       [-1024, 1024]                  torchxrayvision DenseNet-121 (docs/mimic-cxr.md section 8)

The state-dict layout is exactly torchvision's (``features.*``, ``classifier.*``), so CheXNet and
torchxrayvision weights load key for key once their names are normalised. Pretrained weights come
from LOCAL files only (:func:`load_chexnet`, :func:`load_xrv_densenet`); a missing file is an error
naming it and where to get it. Their heads (14-way CheXNet, 18-way xrv) are dropped: the 10-way head
starts fresh. :meth:`XrayDenseNet.penultimate` gives the 1024-d pooled features (FID features).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from raygen.data.labels import CLASSES
from raygen.errors import MissingFileError

log = logging.getLogger(__name__)

__all__ = [
    "CHEXNET_URL",
    "ClassifierConfig",
    "FEATURE_DIM",
    "INIT_NORMS",
    "XRV_URL",
    "XrayDenseNet",
    "build_classifier",
    "load_backbone",
    "load_chexnet",
    "load_xrv_densenet",
]

FEATURE_DIM = 1024  # DenseNet-121's last block width: the penultimate feature size
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics on [0, 1] RGB (CheXNet's input)
IMAGENET_STD = (0.229, 0.224, 0.225)
XRV_MAX = 1024.0  # torchxrayvision maps [0, 255] to [-1024, 1024]

CHEXNET_URL = "https://github.com/arnoweng/CheXNet (model.pth.tar, a DataParallel torchvision DenseNet-121)"
XRV_URL = (
    "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt (densenet121-res224-chex)"
)

InputNorm = Literal["signed", "imagenet", "xrv"]
# The input convention each initialisation was trained with.
INIT_NORMS: dict[str, InputNorm] = {"scratch": "signed", "chexnet": "imagenet", "xrv": "xrv"}


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the classifier; saved in every checkpoint so it can be rebuilt."""

    in_channels: int = 1  # 1 = grey (RayGen's images); 3 = grey replicated (ImageNet-style stems)
    num_classes: int = len(CLASSES)  # the paper's 10 labels
    input_norm: InputNorm = "signed"  # the convention of the initial weights (see the module docstring)
    memory_efficient: bool = False  # torchvision's checkpointed dense layers: less memory, slower


def _input_affine(norm: InputNorm, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, C, 1, 1), with ``net_input = x * scale + shift`` for x in [-1, 1]."""
    if norm == "signed":
        scale, shift = [1.0] * channels, [0.0] * channels
    elif norm == "xrv":
        scale, shift = [XRV_MAX] * channels, [0.0] * channels
    elif norm == "imagenet":
        # (u - m) / s with u = (x + 1) / 2  ->  x / (2 s) + (0.5 - m) / s; grey stems use the RGB mean.
        mean = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,) * channels
        std = IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,) * channels
        scale = [1.0 / (2.0 * s) for s in std]
        shift = [(0.5 - m) / s for m, s in zip(mean, std)]
    else:
        raise ValueError(f"unknown input_norm {norm!r}; choose one of {sorted(set(INIT_NORMS.values()))}")
    return torch.tensor(scale).view(1, -1, 1, 1), torch.tensor(shift).view(1, -1, 1, 1)


class XrayDenseNet(torchvision.models.DenseNet):
    """torchvision DenseNet-121 (growth 32, blocks 6-12-24-16) with a ``config.in_channels`` stem.

    forward: (B, C, R, R) float in [-1, 1] -> (B, num_classes) logits. R >= 32 (five 2x reductions).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(
            growth_rate=32,
            block_config=(6, 12, 24, 16),
            num_init_features=64,
            num_classes=config.num_classes,
            memory_efficient=config.memory_efficient,
        )
        if config.in_channels != 3:
            self.features.conv0 = nn.Conv2d(config.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.features.conv0.weight)  # torchvision's init for every conv
        self.config = config
        scale, shift = _input_affine(config.input_norm, config.in_channels)
        # Non-persistent: the state dict stays exactly torchvision's; the config rebuilds these.
        self.register_buffer("in_scale", scale, persistent=False)
        self.register_buffer("in_shift", shift, persistent=False)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) [-1, 1] -> (B, 1024) features: ReLU and global average pool of the last block
        (torchxrayvision's ``features2``)."""
        h = self.features(x * self.in_scale + self.in_shift)  # (B, 1024, R/32, R/32)
        return F.adaptive_avg_pool2d(F.relu(h), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.penultimate(x))  # (B, K) logits


# --------------------------------------------------------------------------------------------
# Pretrained backbones from local files


def _require_file(path: str | Path, what: str, where: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"{what} weights not found: {path}. Get them from {where} and put them there; "
            "nothing is downloaded at run time."
        )
    return path


def load_chexnet(path: str | Path) -> dict[str, torch.Tensor]:
    """CheXNet's backbone as a torchvision ``features.*`` state dict (3-channel stem, ImageNet input).

    CheXNet checkpoints (arnoweng/CheXNet ``model.pth.tar``) hold ``{"state_dict": ...}`` with keys
    like ``module.densenet121.features.denseblock1.denselayer1.norm.1.weight`` (DataParallel prefix,
    a ``densenet121`` wrapper, torchvision's pre-0.3 names ``norm.1`` / ``conv.1``) and a 14-way head
    ``classifier.0.*``; the prefixes are stripped, the names renamed (``norm1``, ``conv1``) and the
    head dropped. Loaded with ``weights_only=True`` (tensors and containers only).
    """
    from raygen.metrics.features import rename_legacy_densenet_keys  # the one legacy-name mapper

    file = _require_file(path, "CheXNet", CHEXNET_URL)
    obj = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{file}: expected a CheXNet state dict, got {type(obj).__name__}")
    stripped = {}
    for key, value in obj.items():
        key = key.removeprefix("module.").removeprefix("densenet121.")
        stripped[key] = value
    state = rename_legacy_densenet_keys(stripped)
    return {k: v for k, v in state.items() if k.startswith("features.")}


def load_xrv_densenet(path: str | Path) -> dict[str, torch.Tensor]:
    """torchxrayvision DenseNet-121's backbone as a ``features.*`` state dict (1-channel stem).

    Reads a plain state dict in xrv's layout (``features.conv0.weight`` (64, 1, 7, 7), ...,
    ``classifier.weight`` (18, 1024), ``op_threshs``) or xrv's released whole-model pickle, through
    :func:`raygen.metrics.xrv.load_xrv_state_dict` (restricted unpickler, no code runs). The 18-way
    head is dropped. Input convention: [-1024, 1024].
    """
    from raygen.metrics.xrv import load_xrv_state_dict  # shared with the FID feature extractor

    file = _require_file(path, "torchxrayvision DenseNet-121", XRV_URL)
    state = load_xrv_state_dict(file)
    return {k: v for k, v in state.items() if k.startswith("features.")}


def _adapt_stem(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """(64, C0, 7, 7) stem weights -> (64, channels, 7, 7) for grey inputs replicated across channels.

    3 -> 1 sums the RGB filters (a grey image replicated to RGB gives the same response); 1 -> 3
    splits the filter in three equal parts (same reason).
    """
    c0 = weight.shape[1]
    if c0 == channels:
        return weight
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if c0 == 1:
        return weight.expand(-1, channels, -1, -1).div(channels).contiguous()
    raise ValueError(f"cannot adapt a {c0}-channel stem to {channels} channels")


def load_backbone(model: XrayDenseNet, state: dict[str, torch.Tensor]) -> None:
    """Load a ``features.*`` state dict into ``model`` strictly (the head keeps its fresh init).

    The stem is adapted to ``model.config.in_channels`` (:func:`_adapt_stem`). Raises ValueError
    listing missing, unexpected and wrongly shaped keys.
    """
    state = dict(state)
    if "features.conv0.weight" in state:
        state["features.conv0.weight"] = _adapt_stem(state["features.conv0.weight"], model.config.in_channels)
    target = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    # Files saved before torch 0.4.1 (CheXNet's model.pth.tar) have no BatchNorm step counters;
    # BatchNorm's own loader sets a missing one to 0 (the counter never shapes an eval-mode output).
    missing = sorted(k for k in set(target) - set(state) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or shapes:
        raise ValueError(
            f"backbone weights do not match DenseNet-121: {len(missing)} missing {missing[:8]}, "
            f"{len(unexpected)} unexpected {unexpected[:8]}, {len(shapes)} shape mismatches {shapes[:8]}"
        )
    model.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()}, strict=True)


def build_classifier(
    in_channels: int = 1,
    init: Literal["scratch", "chexnet", "xrv"] = "scratch",
    weights: str | Path | None = None,
    num_classes: int = len(CLASSES),
    memory_efficient: bool = False,
) -> XrayDenseNet:
    """A DenseNet-121 classifier, randomly initialised (seed torch first) or with a pretrained backbone.

    Args:
        in_channels: 1 (grey) or 3 (grey replicated).
        init: ``scratch``, ``chexnet`` (``weights`` = CheXNet file) or ``xrv`` (``weights`` = xrv file).
        weights: the local weight file; required unless ``init`` is ``scratch``.
        num_classes: head width (the paper's 10 classes).
        memory_efficient: torchvision's gradient-checkpointed dense layers.
    """
    if init not in INIT_NORMS:
        raise ValueError(f"unknown init {init!r}; choose one of {sorted(INIT_NORMS)}")
    config = ClassifierConfig(
        in_channels=in_channels, num_classes=num_classes, input_norm=INIT_NORMS[init], memory_efficient=memory_efficient
    )
    model = XrayDenseNet(config)
    if init == "scratch":
        if weights is not None:
            raise ValueError("init 'scratch' takes no weight file")
        return model
    if weights is None:
        where = CHEXNET_URL if init == "chexnet" else XRV_URL
        raise FileNotFoundError(f"init {init!r} needs a local weight file (get it from {where})")
    state = load_chexnet(weights) if init == "chexnet" else load_xrv_densenet(weights)
    load_backbone(model, state)
    log.info("classifier backbone initialised from %s weights %s (%d tensors)", init, weights, len(state))
    return model
