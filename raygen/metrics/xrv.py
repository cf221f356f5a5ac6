"""The torchxrayvision DenseNet-121: the paper's FID feature space (docs/mimic-cxr.md s. 8).

It is rebuilt here from torchvision's DenseNet-121 with a 1-channel stem (the same module names as
``xrv.models.DenseNet``), so torchxrayvision itself is not a dependency; it reads either a plain state
dict in xrv's key layout or the original pickled model file from torchxrayvision's GitHub release
(through a restricted unpickler that only admits torch modules, tensors and stand-ins for xrv's own
classes). Nothing downloads.

torchxrayvision expects 1 x 224 x 224 in [-1024, 1024]: :func:`unit_to_xrv` is the one conversion from
the [0, 1] display convention to that range.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from raygen.metrics.features import FeatureExtractor, file_sha12, rename_legacy_densenet_keys

log = logging.getLogger(__name__)

__all__ = [
    "XRV_WEIGHTS",
    "load_xrv_state_dict",
    "unit_to_xrv",
    "xrv_densenet_extractor",
    "xrv_weights_path",
]

# torchxrayvision's weight names -> release file (torchxrayvision/models.py, model_urls). The file lands in
# ~/.torchxrayvision/models_data/<file> when xrv downloads it; a pre-placed file there is used as is.
_XRV_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
XRV_WEIGHTS: dict[str, str] = {
    "densenet121-res224-chex": "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
    "densenet121-res224-all": (
        "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    ),
    "densenet121-res224-mimic_ch": "mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
    "densenet121-res224-mimic_nb": "mimic_nb-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
}
XRV_RESOLUTION = 224  # xrv DenseNets were trained at 224 x 224 (the "res224" in their names)
XRV_MAX = 1024.0  # xrv.datasets.normalize maps [0, maxval] to [-1024, 1024]


# --------------------------------------------------------------------------------------------
# Pixel convention


def unit_to_xrv(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats (any shape) -> torchxrayvision's [-1024, 1024] float32, clamped first.

    Same map as ``xrv.datasets.normalize(img, maxval=255)`` applied to ``img = 255 * x``:
    ``(2 * x - 1) * 1024``.
    """
    return x.float().clamp(0.0, 1.0).mul(2.0).sub(1.0).mul(XRV_MAX)


# --------------------------------------------------------------------------------------------
# torchxrayvision DenseNet-121


def xrv_weights_path(weights: str = "densenet121-res224-chex", path: str | Path | None = None) -> Path:
    """The weight file to use: ``path`` if given, else xrv's cache ``~/.torchxrayvision/models_data/``.

    Raises FileNotFoundError naming the file and where to get it; never downloads.
    """
    if weights not in XRV_WEIGHTS:
        raise ValueError(f"unknown torchxrayvision weights {weights!r}; known: {sorted(XRV_WEIGHTS)}")
    filename = XRV_WEIGHTS[weights]
    target = Path(path) if path is not None else Path.home() / ".torchxrayvision" / "models_data" / filename
    if not target.is_file():
        raise FileNotFoundError(
            f"torchxrayvision weights {weights!r} not found at {target}. Download {filename} from "
            f"{_XRV_RELEASE}{filename} (or run torchxrayvision once on a machine with internet) and place it "
            f"at ~/.torchxrayvision/models_data/{filename}, or pass its path. Nothing is downloaded at run time."
        )
    return target


class _XrvStandIn(nn.Module):
    """Takes the place of torchxrayvision's classes when unpickling its released model files; only
    the module tree (parameters, buffers, children) is read from it, never its forward."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits torch modules, tensors/storages and xrv classes (as :class:`_XrvStandIn`); nothing else,
    so a weight file cannot run arbitrary code through ``find_class``."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch", "device"),
        ("builtins", "set"),
        ("__builtin__", "set"),  # python-2 name in legacy-format pickles
        ("torch.nn.backends.thnn", "_get_thnn_function_backend"),
    }  # torch < 1.2 modules pickled a no-op backend

    def find_class(self, module: str, name: str):  # noqa: D102 (pickle API)
        if module.startswith("torchxrayvision"):
            return _XrvStandIn
        if module.startswith("torch.nn.modules."):
            found = super().find_class(module, name)
            if isinstance(found, type) and issubclass(found, nn.Module):  # layers only, not helper functions
                return found
        elif (
            (module == "torch._utils" and name.startswith("_rebuild_"))
            or (module, name) in self._ALLOWED
            or (module, name) == ("torch.nn.parameter", "Parameter")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"weight file references {module}.{name}, which is not allowed")


class _RestrictedPickle:
    """The ``pickle_module`` handed to torch.load for xrv's pickled (whole-model) release files."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda f, **kw: _RestrictedUnpickler(f, **kw).load())


def _module_state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of an unpickled module tree, read from its ``__dict__`` (old pickles lack
    attributes that ``nn.Module.state_dict`` needs, e.g. ``_non_persistent_buffers_set``)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in {**module.__dict__.get("_parameters", {}), **module.__dict__.get("_buffers", {})}.items():
        if value is not None:
            state[prefix + key] = value.detach()
    for key, child in module.__dict__.get("_modules", {}).items():
        if child is not None:
            state.update(_module_state(child, prefix + key + "."))
    return state


def load_xrv_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchxrayvision DenseNet state dict from a plain state-dict file or xrv's pickled model file.

    Keys come back in xrv's (= torchvision's) layout: ``features.conv0.weight`` (64, 1, 7, 7), ...,
    ``classifier.weight`` (n_targets, 1024); ``module.`` prefixes and legacy ``norm.1`` names are
    normalised and xrv's ``op_threshs`` buffer is dropped (it only rescales the logits).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # xrv releases pickle the whole nn.Module
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    if isinstance(obj, nn.Module):
        obj = _module_state(obj)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict or a pickled DenseNet, got {type(obj).__name__}")
    state = rename_legacy_densenet_keys({k: v for k, v in obj.items() if k != "op_threshs"})
    return {k: v for k, v in state.items() if k.startswith(("features.", "classifier."))}


def _build_xrv_densenet(state: dict[str, torch.Tensor]) -> nn.Module:
    """torchvision DenseNet-121 with xrv's 1-channel stem; loads ``state`` strictly."""
    import torchvision

    n_targets = state["classifier.weight"].shape[0]
    net = torchvision.models.densenet121(weights=None, num_classes=n_targets)
    net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.load_state_dict(state, strict=True)
    return net


def xrv_densenet_extractor(
    weights: str = "densenet121-res224-chex",
    path: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> FeatureExtractor:
    """torchxrayvision DenseNet-121 ``features2`` (1024-d: ReLU, global average pool of the last block).

    Input (B, 1, S, S) square [0, 1] images; they are resized to 224 x 224 (bilinear, antialiased, like
    xrv's dataset resizer when shrinking) and mapped by :func:`unit_to_xrv`. Output (B, 1024) float64.
    Name: ``torchxrayvision-<weights>:<sha256[:12]>``.
    """
    file = xrv_weights_path(weights, path)
    net = _build_xrv_densenet(load_xrv_state_dict(file))
    features = net.features.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def fn(images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected (B, 1, S, S) grey square images, got {tuple(images.shape)}")
        out = []
        for chunk in images.split(batch_size):
            x = chunk.to(device).float()
            if x.shape[-1] != XRV_RESOLUTION:
                x = F.interpolate(
                    x, size=(XRV_RESOLUTION, XRV_RESOLUTION), mode="bilinear", align_corners=False, antialias=True
                )
            h = F.relu(features(unit_to_xrv(x)))  # (b, 1024, 7, 7)
            out.append(F.adaptive_avg_pool2d(h, 1).flatten(1).double().cpu())  # (b, 1024)
        return torch.cat(out)

    name = f"torchxrayvision-{weights}:{file_sha12(file)}"
    log.info("feature extractor %s from %s", name, file)
    return FeatureExtractor(name=name, fn=fn)
