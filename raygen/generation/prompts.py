"""Prompt text to the decoder's text states, with the encoder its training cache was built with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from raygen.models.text_encoder import EncoderParams, text_encoder_from_params

log = logging.getLogger(__name__)


def check_text_params(text_params: EncoderParams, params_path: Path, text_meta: dict[str, Any]) -> None:
    """Refuse an encoder or normalisation other than the training cache's: the decoder knows only those states."""
    trained = text_meta.get("params", {})
    for key in ("source", "normalize"):
        if key in trained and trained[key] != getattr(text_params, key):
            raise ValueError(
                f"embed_text.{key} is {getattr(text_params, key)!r} in {params_path} but the decoder was "
                f"trained on {trained[key]!r} text states; use the params of the training run"
            )


def encode_prompts(
    prompts: list[str],
    text_params: EncoderParams,
    params_path: Path,
    model_dir: Path | None,
    text_meta: dict[str, Any],
    device: torch.device,
    cxr_bert_dir: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts with the ``embed_text`` encoder -> states (B, L, D) float16, lengths (B,) int64.

    ``text_params`` is the ``embed_text`` section of ``params_path``. ``text_meta`` is the training
    text cache's meta.json (kept in the decoder checkpoint): its length L is used, and an encoder or
    normalisation other than the cache's is an error (:func:`check_text_params`).
    """
    check_text_params(text_params, params_path, text_meta)
    length = int(text_meta["max_length"])
    encoder = text_encoder_from_params(
        text_params, device, max_length=length, model_dir=model_dir, cxr_bert_dir=cxr_bert_dir
    )
    encoded = encoder.encode(prompts)  # states padded to max_length
    if encoded.truncated.any():
        cut = encoder.token_lengths(prompts) - length  # (B,) tokens beyond L, <= 0 where none
        for i in torch.nonzero(encoded.truncated).flatten().tolist():
            log.warning(
                "prompt %d is %d tokens longer than the decoder's text length %d: its end was cut",
                i,
                int(cut[i]),
                length,
            )
    if encoded.states.shape[-1] != int(text_meta["dim"]):
        raise ValueError(f"text encoder width {encoded.states.shape[-1]} != the decoder's {text_meta['dim']}")
    return encoded.states.to(device=device, dtype=torch.float16), encoded.lengths.to(device)
