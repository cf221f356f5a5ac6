"""Benchmark the VQ-GAN tokenizer: encode (images -> token ids) and decode (ids -> images) images/s.

    python bench/bench_vqgan.py --preset unixgen        # UniXGen's shape: 3 channels, 512 px, 32x32 tokens
    python bench/bench_vqgan.py --preset smoke --device cpu --iters 2   # the dry run CI makes

Random weights of the exact architecture: speed does not depend on the values. On CUDA the model runs
in channels_last under bf16 autocast (the tokenize stage keeps fp32 for taming-exact ids; ``--precision
fp32`` times that) and every timing is bracketed by ``torch.cuda.synchronize()``. Prints one JSON
object (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from raygen.models.vqgan import VQGANConfig, build_vqgan  # noqa: E402
from raygen.runtime import autocast_dtype, configure_torch, pick_device  # noqa: E402

PRESETS = {
    # UniXGen's MIMIC VQ-GAN (the paper profile's tokenizer).
    "unixgen": VQGANConfig(
        embed_dim=256,
        n_embed=1024,
        z_channels=256,
        resolution=512,
        in_channels=3,
        out_ch=3,
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(24,),
        dropout=0.0,
    ),
    "smoke": VQGANConfig(
        embed_dim=16,
        n_embed=64,
        z_channels=16,
        resolution=32,
        in_channels=1,
        out_ch=1,
        ch=32,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
    ),
}


def timed(fn, iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="unixgen")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="images per call (default: 16 on CUDA, 2 on CPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    configure_torch(device)
    config = PRESETS[args.preset]
    batch = args.batch or (16 if device.type == "cuda" else 2)
    model = build_vqgan(config).to(device).eval().to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device, args.precision)
    cast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    images = torch.rand(batch, config.in_channels, config.resolution, config.resolution, device=device) * 2 - 1
    images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), cast():
        ids = model.encode_ids(images)
        encode = timed(lambda: model.encode_ids(images), args.iters, args.warmup, device)
        decode = timed(lambda: model.decode_ids(ids), args.iters, args.warmup, device)
    result = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": str(dtype).removeprefix("torch.") if dtype else "fp32",
        "batch": batch,
        "resolution": config.resolution,
        "tokens": list(config.grid),
        "iters": args.iters,
        "encode_images_per_s": round(batch / encode, 2),
        "decode_images_per_s": round(batch / decode, 2),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
