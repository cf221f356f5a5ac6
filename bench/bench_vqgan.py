"""Benchmark the VQ-GAN tokenizer: encode (images -> token ids) and decode (ids -> images) images/s.

    python bench/bench_vqgan.py                          # the paper profile's: UniXGen's, 3 channels, 512 px
    python bench/bench_vqgan.py --profile smoke --device cpu --iters 2   # the dry run CI makes

Random weights of the architecture params.yaml's ``vqgan`` section gives under ``--profile``: speed
does not depend on the values. On CUDA the model runs in channels_last under bf16 autocast (the
tokenize stage keeps fp32 for taming-exact ids; ``--precision fp32`` times that) and every timing is
bracketed by ``torch.cuda.synchronize()``. Prints one JSON object (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from raygen.config import PROFILES, load_section  # noqa: E402
from raygen.models.vqgan import build_vqgan  # noqa: E402
from raygen.runtime import autocast, autocast_dtype, configure_torch, pick_device  # noqa: E402
from raygen.stages.vqgan import VqganParams  # noqa: E402

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


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
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="paper",
        help="whose vqgan section gives the architecture (default: paper, UniXGen's: 3 channels, 512 px)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="images per call (default: 16 on CUDA, 2 on CPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    configure_torch(device)
    config = load_section(PARAMS, "vqgan", VqganParams, args.profile).model_config()
    batch = args.batch or (16 if device.type == "cuda" else 2)
    model = build_vqgan(config).to(device).eval().to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device, args.precision)
    images = torch.rand(batch, config.in_channels, config.resolution, config.resolution, device=device) * 2 - 1
    images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, dtype):
        ids = model.encode_ids(images)
        encode = timed(lambda: model.encode_ids(images), args.iters, args.warmup, device)
        decode = timed(lambda: model.decode_ids(ids), args.iters, args.warmup, device)
    result = {
        "profile": args.profile,
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
