"""A taming VQ-GAN's architecture and its yaml, without torch: the ``vqgan`` params, ``raygen
check-params`` and the Snakefile's process read these, and none of them should pay for importing torch.

``VQGANConfig`` is ``model.params`` of a taming yaml with ``ddconfig`` flattened; :mod:`raygen.models.vqgan`
builds the network it describes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

TAMING_TARGET = "taming.models.vqgan.VQModel"
# ddconfig keys taming's Encoder/Decoder accept that change nothing we support otherwise.
_IGNORED_DDCONFIG = {"give_pre_end": False, "resamp_with_conv": True, "tanh_out": False}


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of a taming VQ-GAN (``model.params`` of a taming yaml, ddconfig flattened).

    No defaults: a config comes whole from a taming yaml (:func:`config_from_taming`) or from the
    ``vqgan`` params (``raygen.stages.vqgan.VqganParams.model_config``), which hold the demo's values.
    """

    embed_dim: int  # codebook vector size
    n_embed: int  # codebook entries; RayGen uses id n_embed as its mask token
    z_channels: int  # encoder output channels before quant_conv
    resolution: int  # input side in pixels
    in_channels: int  # 1 = grey (ours), 3 = RGB (UniXGen's)
    out_ch: int  # decoder output channels (= in_channels)
    ch: int  # base channel width
    ch_mult: tuple[int, ...]  # width multiplier per level; f = 2^(levels - 1)
    num_res_blocks: int  # residual blocks per level (decoder has one more)
    attn_resolutions: tuple[int, ...]  # feature-map sides with self-attention (the mid block always has one)
    dropout: float
    double_z: bool = False  # taming VQ models use single z

    @property
    def factor(self) -> int:
        """Down-sampling factor f: a 2x2 pixel block per level after the first."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (h, w) = (R / f, R / f)."""
        return (self.resolution // self.factor, self.resolution // self.factor)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def ddconfig(self) -> dict[str, Any]:
        """The taming ``ddconfig`` mapping (lists, not tuples, so the yaml stays plain)."""
        return {
            "double_z": self.double_z,
            "z_channels": self.z_channels,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "out_ch": self.out_ch,
            "ch": self.ch,
            "ch_mult": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "dropout": self.dropout,
        }


def config_from_taming(raw: dict[str, Any], source: str = "config") -> VQGANConfig:
    """Read ``model.params`` of a taming yaml (already parsed) into a :class:`VQGANConfig`.

    Only ``VQModel`` configs are accepted; ``lossconfig`` is ignored here (it is never built).
    """
    model = raw.get("model") or {}
    target = model.get("target")
    if target != TAMING_TARGET:
        raise ValueError(f"{source}: model.target is {target!r}; only {TAMING_TARGET} is supported")
    params = model.get("params") or {}
    for key in ("remap", "colorize_nlabels"):
        if params.get(key) is not None:
            raise ValueError(f"{source}: model.params.{key} is not supported")
    dd = dict(params.get("ddconfig") or {})
    for key, neutral in _IGNORED_DDCONFIG.items():
        if dd.pop(key, neutral) != neutral:
            raise ValueError(f"{source}: ddconfig.{key} other than {neutral!r} is not supported")
    known = {f.name for f in dataclasses.fields(VQGANConfig)}
    unknown = sorted(set(dd) - known)
    if unknown:
        log.warning("%s: ignoring ddconfig key(s) %s (taming's Encoder/Decoder ignore them too)", source, unknown)
    try:
        return VQGANConfig(
            embed_dim=int(params["embed_dim"]),
            n_embed=int(params["n_embed"]),
            z_channels=int(dd["z_channels"]),
            resolution=int(dd["resolution"]),
            in_channels=int(dd["in_channels"]),
            out_ch=int(dd["out_ch"]),
            ch=int(dd["ch"]),
            ch_mult=tuple(int(m) for m in dd["ch_mult"]),
            num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions", ())),
            dropout=float(dd.get("dropout", 0.0)),
            double_z=bool(dd.get("double_z", True)),
        )
    except KeyError as err:
        raise ValueError(f"{source}: taming config lacks model.params key {err}") from err


def read_taming_config(path: str | Path) -> tuple[VQGANConfig, dict[str, Any]]:
    """Parse a taming yaml file: (architecture, the raw mapping as written)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VQ-GAN config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    return config_from_taming(raw, str(path)), raw


def taming_yaml(config: VQGANConfig, lossconfig: dict[str, Any], base_learning_rate: float) -> dict[str, Any]:
    """A taming yaml mapping for ``config`` (taming's ``main.py`` and :func:`load_taming` read it)."""
    return {
        "model": {
            "base_learning_rate": base_learning_rate,
            "target": TAMING_TARGET,
            "params": {
                "embed_dim": config.embed_dim,
                "n_embed": config.n_embed,
                "ddconfig": config.ddconfig(),
                "lossconfig": lossconfig,
            },
        }
    }
