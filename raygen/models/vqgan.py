"""The VQ-GAN tokenizer: taming-transformers' encoder, quantizer and decoder, without Lightning.

taming's ``VQModel`` is a Lightning module that does not run on Lightning 2 and whose constructor
builds the training loss (LPIPS, which downloads VGG weights). :class:`VQGAN` holds the same
sub-modules under the same names (``encoder``, ``decoder``, ``quantize``, ``quant_conv``,
``post_quant_conv``), so taming checkpoints load into it and its state dict loads into taming.

    vq = load_taming("config.yaml", "last.ckpt")     # UniXGen's MIMIC model, or ours
    ids = vq.encode_ids(x)       # (B, C, R, R) [-1, 1] -> (B, h*w) int64, row-major
    x_rec = vq.decode_ids(ids)   # (B, h*w) -> (B, C, R, R) [-1, 1] (clamped)

Read top to bottom: model, checkpoint I/O. The architecture and its taming yaml live in
:mod:`raygen.models.taming_config`.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import VectorQuantizer2

from raygen.errors import UserError
from raygen.models.taming_config import VQGANConfig, config_from_taming, read_taming_config, taming_yaml

log = logging.getLogger(__name__)


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint whose tensors do not match the model its config describes."""


@dataclass(frozen=True)
class Quantized:
    """Encoder output: ``z`` (B, E, h, w) pre-quantisation, ``z_q`` (B, E, h, w) straight-through
    quantised (gradients flow to ``z``), ``ids`` (B, h*w) int64 row-major codebook indices,
    ``loss`` the scalar codebook + 0.25 * commitment loss (taming's VectorQuantizer2, legacy=False)."""

    z: torch.Tensor
    z_q: torch.Tensor
    ids: torch.Tensor
    loss: torch.Tensor


class VQGAN(nn.Module):
    """taming's VQModel without Lightning and without its loss (same state-dict names)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        dd = config.ddconfig()
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)
        # beta 0.25 as VQModel; legacy=False applies beta to the commitment term (taming's fix).
        self.quantize = VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25, legacy=False)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def last_layer(self) -> nn.Parameter:
        """The decoder's output conv weight (the adaptive GAN weight compares gradients here)."""
        return self.decoder.conv_out.weight

    def encode(self, x: torch.Tensor) -> Quantized:
        """(B, C, R, R) [-1, 1] -> :class:`Quantized`; exactly taming's VQModel.encode."""
        z = self.quant_conv(self.encoder(x))  # (B, E, h, w)
        z_q, loss, (_, _, ids) = self.quantize(z)  # ids: (B*h*w,) in b-h-w order
        return Quantized(z=z, z_q=z_q, ids=ids.view(x.shape[0], -1), loss=loss)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, E, h, w) codebook vectors -> (B, C, R, R), unclamped (taming's VQModel.decode)."""
        return self.decoder(self.post_quant_conv(z_q))

    @torch.no_grad()
    def encode_ids(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) float in [-1, 1] -> (B, h*w) int64 token ids, row-major."""
        return self.encode(x).ids

    @torch.no_grad()
    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h*w) int64 ids -> (B, C, R, R) float32 in [-1, 1] (clamped)."""
        return self.decode_ids_raw(ids).clamp(-1.0, 1.0)

    def decode_ids_raw(self, ids: torch.Tensor) -> torch.Tensor:
        """Like :meth:`decode_ids` but unclamped: exactly taming's get_codebook_entry + decode."""
        h, w = self.config.grid
        shape = (ids.shape[0], h, w, self.config.embed_dim)
        z_q = self.quantize.get_codebook_entry(ids.reshape(-1), shape)  # (B, E, h, w)
        return self.decode(z_q)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Training pass: (B, C, R, R) -> (reconstruction (B, C, R, R) unclamped, :class:`Quantized`)."""
        q = self.encode(x)
        return self.decode(q.z_q), q


def build_vqgan(config: VQGANConfig) -> VQGAN:
    """A randomly initialised VQ-GAN (taming's own initialisation)."""
    if config.out_ch != config.in_channels:
        raise ValueError(f"out_ch ({config.out_ch}) must equal in_channels ({config.in_channels})")
    if config.resolution % config.factor:
        raise ValueError(f"resolution {config.resolution} is not divisible by f={config.factor}")
    return VQGAN(config)


# --------------------------------------------------------------------------------------------
# Checkpoints


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning ``last.ckpt`` or of our plain ``{"state_dict": ...}`` file.

    ``weights_only=True`` first (our files pass). Lightning checkpoints pickle hyper-parameter
    objects that torch >= 2.6 refuses under weights_only; for those we fall back to a full
    unpickle, which can run code: only do this for a file you trust (UniXGen's release).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VQ-GAN checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        log.warning(
            "%s is not loadable with weights_only=True (%s); loading it with weights_only=False, "
            "which can execute code stored in the file: only do this for a trusted checkpoint",
            path,
            str(err).splitlines()[0],
        )
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path}: no state_dict of tensors found")
    return state


def check_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Drop ``loss.*`` keys, then demand an exact match (names and shapes) with ``model``.

    Raises :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys; a
    non-strict load would hide missing or invented layers (e.g. attention at the wrong level).
    """
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing from checkpoint ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"not in the config's model ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch ({len(shapes)}): {'; '.join(shapes)}")
        raise CheckpointMismatchError(f"{source} does not match its config:\n  " + "\n  ".join(parts))
    return state


def load_taming(config_path: str | Path, checkpoint_path: str | Path, device: str | torch.device = "cpu") -> VQGAN:
    """Build a VQ-GAN from a taming yaml alone and load its checkpoint strictly (``loss.*`` ignored).

    The loss in ``lossconfig`` is never instantiated (LPIPS would download VGG weights). Returns
    the model in ``eval()`` mode with gradients off, on ``device``.
    """
    config, _ = read_taming_config(config_path)
    model = build_vqgan(config)
    state = check_state_dict(model, read_state_dict(checkpoint_path), str(checkpoint_path))
    model.load_state_dict(state, strict=True)
    log.info(
        "loaded VQ-GAN %s: %dpx, %d channel(s), grid %dx%d, codebook %d",
        checkpoint_path,
        config.resolution,
        config.in_channels,
        *config.grid,
        config.n_embed,
    )
    return model.eval().requires_grad_(False).to(device)


def model_state(model: VQGAN) -> dict[str, torch.Tensor]:
    """The state dict to save in taming format (tensors on CPU, same names as taming's VQModel)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


__all__ = [
    "CheckpointMismatchError",
    "Quantized",
    "VQGAN",
    "VQGANConfig",
    "build_vqgan",
    "check_state_dict",
    "config_from_taming",
    "load_taming",
    "model_state",
    "read_state_dict",
    "read_taming_config",
    "taming_yaml",
]
