"""The decoder's named network shapes, without torch: the ``train_decoder`` params check a preset's name
against them, and ``raygen check-params`` should not import torch to do so."""

from __future__ import annotations

# Network shapes only; grid / codebook / text width come from the caches (raygen.models.decoder.build_decoder).
DECODER_PRESETS: dict[str, dict[str, float | int]] = {
    # Tests and the smoke pipeline: seconds on a CPU.
    "smoke": {"width": 32, "depth": 2, "heads": 2, "ffn": 64, "dropout": 0.0},
    # The CPU demo: a narrow, shallow network that trains in minutes on a laptop-class CPU. No
    # dropout: a short run sees each training pair only a few times.
    "demo": {"width": 128, "depth": 3, "heads": 4, "ffn": 512, "dropout": 0.0},
    # RayGen paper section 3.1: d=1024, 6 layers, 8 heads, FFN 4096; dropout 0.1 as in MUSE.
    "paper": {"width": 1024, "depth": 6, "heads": 8, "ffn": 4096, "dropout": 0.1},
}
