"""FID and KID with a named, pluggable feature extractor (the ``evaluate`` stage's image realism).

Every FID/KID number depends on the network that produced the features, so every result carries the
extractor's name, and the names pin the weights by content hash::

    torchxrayvision-densenet121-res224-chex:<sha256[:12]>   the paper's FID features (mimic-cxr.md s. 8)
    raygen-classifier-penultimate:<ckpt sha256[:12]>        our own classifier (module_extractor)
    inception-v3:<file sha256[:12]>                         the usual natural-image FID (local file only)

Nothing downloads. The torchxrayvision DenseNet-121 is rebuilt here from torchvision's DenseNet-121
with a 1-channel stem (the same module names as ``xrv.models.DenseNet``), so torchxrayvision itself is
not a dependency; it reads either a plain state dict in xrv's key layout or the original pickled
model file from torchxrayvision's GitHub release (through a restricted unpickler that only admits
torch modules, tensors and stand-ins for xrv's own classes).

Pixel conventions: extractors take (B, 1, H, W) float images in [0, 1] (display convention) and return
(B, F) float64 features. torchxrayvision expects 1 x 224 x 224 in [-1024, 1024]: :func:`unit_to_xrv`
is the one conversion to that range.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from raygen.io import sha256_file
from raygen.metrics.reconstruction import FeatureExtractor, _rename_legacy_densenet_keys, frechet_distance

log = logging.getLogger(__name__)

__all__ = [
    "FeatureExtractor",
    "FIDResult",
    "MIN_FID_SAMPLES",
    "XRV_WEIGHTS",
    "compute_fid",
    "compute_fid_or_reason",
    "extract_features",
    "file_sha12",
    "inception_extractor",
    "kid",
    "load_xrv_state_dict",
    "module_extractor",
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
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception weights
MIN_FID_SAMPLES = 2  # per set: a covariance and KID's unbiased MMD need two samples


def file_sha12(path: str | Path) -> str:
    """First 12 hex digits of a file's SHA-256 (streamed): pins the weights in extractor names."""
    return sha256_file(path)[:12]


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
    state = _rename_legacy_densenet_keys({k: v for k, v in obj.items() if k != "op_threshs"})
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


# --------------------------------------------------------------------------------------------
# FID and KID


@dataclass(frozen=True)
class FIDResult:
    """FID (Heusel et al. 2017) and KID (Binkowski et al. 2018, x 1 — not x 1000) between two feature sets.

    ``extractor`` names the features (see module docstring); ``kid_std`` is the std over KID subsets.
    """

    fid: float
    kid_mean: float
    kid_std: float
    n_real: int
    n_fake: int
    extractor: str
    kid_subsets: int
    kid_subset_size: int


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1) ** 3, the KID kernel: (n, d), (m, d) -> (n, m)."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples (m, d) under the polynomial kernel."""
    m = len(x)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    off = m * (m - 1)
    return float((k_xx.sum() - np.trace(k_xx)) / off + (k_yy.sum() - np.trace(k_yy)) / off - 2.0 * k_xy.mean())


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """KID: unbiased polynomial-kernel MMD^2 averaged over ``subsets`` random subsets (drawn without
    replacement, numpy Generator seeded by ``seed``) of size min(subset_size, n_real, n_fake).

    Returns (mean, std, subset size used).
    """
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values)), m


def compute_fid(
    real_feats: np.ndarray | torch.Tensor,
    fake_feats: np.ndarray | torch.Tensor,
    extractor: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> FIDResult:
    """FID and KID between (N, F) real and (M, F) synthetic features from the extractor named ``extractor``."""
    real = np.asarray(real_feats, dtype=np.float64)
    fake = np.asarray(fake_feats, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, F) and (M, F) features, got {real.shape} and {fake.shape}")
    kid_mean, kid_std, m = kid(real, fake, kid_subsets, kid_subset_size, seed)
    return FIDResult(
        fid=frechet_distance(real, fake),
        kid_mean=kid_mean,
        kid_std=kid_std,
        n_real=len(real),
        n_fake=len(fake),
        extractor=extractor,
        kid_subsets=kid_subsets,
        kid_subset_size=m,
    )


def compute_fid_or_reason(
    real_feats: np.ndarray | torch.Tensor,
    fake_feats: np.ndarray | torch.Tensor,
    extractor: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> FIDResult | str:
    """:func:`compute_fid`, or ``"not computed: <reason>"`` when a set is too small or the numbers fail.

    For the smaller comparisons of the evaluate stage (the equal-N floor's halves), where a tiny cohort
    must give a stated gap in metrics.json rather than a crashed stage.
    """
    n_real, n_fake = len(real_feats), len(fake_feats)
    if min(n_real, n_fake) < MIN_FID_SAMPLES:
        return (
            f"not computed: {n_real} real vs {n_fake} generated image(s); FID and KID need at least "
            f"{MIN_FID_SAMPLES} in each set"
        )
    try:
        return compute_fid(real_feats, fake_feats, extractor, kid_subsets, kid_subset_size, seed)
    except (ValueError, np.linalg.LinAlgError) as err:
        log.warning("FID/KID not computed for %d vs %d images: %s", n_real, n_fake, err)
        return f"not computed: {err}"
