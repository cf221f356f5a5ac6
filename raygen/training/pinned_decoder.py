"""The demo's pre-trained decoder (``weights/demo/decoder.ckpt``): its file format and the checks before a run
starts from it (``train_decoder.init: demo``).

``raygen demo-weights`` trains it with the ``train_decoder`` stage on the tokens and text states of its own
dataset (profile ``demo_weights_decoder``: another seed, four times the demo's size; no patient, study or
image shared with the demo's) and packs it here. The demo's
``train_decoder`` stage then fine-tunes it on the demo's own training pairs. Starting from it only makes sense
when the run's caches are what it learned from: tokens of the same pinned VQ-GAN, text states of the same
encoder and settings, and the same network shape. Each is checked, and a mismatch is an error that says
what differs and how to proceed, never a silent start from weights that mean something else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from raygen.config import ConfigError, to_dict
from raygen.models import pinned
from raygen.models.decoder import DecoderConfig

TEXT_KEYS = ("max_length", "normalize")  # text-cache settings the decoder's inputs depend on, besides the encoder


def text_signature(text_meta: dict[str, Any]) -> dict[str, Any]:
    """What makes two text caches interchangeable for a decoder: the encoder's weights and the cache settings."""
    encoder = text_meta.get("encoder")
    encoder = encoder.get("weights_sha256") if isinstance(encoder, dict) else encoder
    return {"encoder": encoder, **{k: text_meta.get(k) for k in TEXT_KEYS}}


def installed_vqgan_sha256(vqgan_dir: Path | None) -> str | None:
    """The SHA-256 of the pinned checkpoint the ``vqgan`` stage installed in ``vqgan_dir`` (None when it
    trained its own, or no folder was given)."""
    metrics = vqgan_dir / "metrics.json" if vqgan_dir else None
    if metrics is None or not metrics.is_file():
        return None
    return (json.loads(metrics.read_text()).get("pretrained") or {}).get("checkpoint", {}).get("sha256")


def pack_decoder(checkpoint: dict[str, Any], vqgan_sha256: str) -> dict[str, Any]:
    """The pinned file's content from a ``train_decoder`` checkpoint: fp16 weights, the network shape, and
    what its inputs were (the VQ-GAN whose tokens it learned, the text cache's signature)."""
    config = checkpoint["config"]
    return {
        "model": pinned.half_floats(checkpoint["model"]),
        "decoder": config["decoder"],
        "vqgan_sha256": vqgan_sha256,
        "text": text_signature(config["text_meta"]),
    }


def load_pinned_decoder(
    folder: Path, decoder: DecoderConfig, vqgan_dir: Path | None, text_meta: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The pinned decoder's weights (fp32) after checking its hash, shape and inputs against this run's."""
    path = pinned.verified(folder, pinned.DECODER)
    packed = torch.load(path, map_location="cpu", weights_only=True)
    fix = "set train_decoder.init: scratch, or re-create it: `raygen demo-weights --out weights/demo --part decoder`"
    if packed["decoder"] != to_dict(decoder):
        raise ConfigError(f"{path} is a decoder of shape {packed['decoder']}; this run's is {to_dict(decoder)}: {fix}")
    installed = installed_vqgan_sha256(vqgan_dir)
    if installed != packed["vqgan_sha256"]:
        raise ConfigError(
            f"{path} learned the tokens of the VQ-GAN with sha256 {packed['vqgan_sha256'][:12]}, but this run's "
            f"tokens come from {'a VQ-GAN trained here' if installed is None else installed[:12]} "
            f"({vqgan_dir}/metrics.json): {fix}"
        )
    ours = text_signature(text_meta)
    if packed["text"] != ours:
        raise ConfigError(f"{path} learned text states {packed['text']}; this run's are {ours}: {fix}")
    return {k: v.float() if v.is_floating_point() else v for k, v in packed["model"].items()}
