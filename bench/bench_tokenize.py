"""Tokenisation speed on this machine: VQ-GAN encoder images/s and JPEG preprocessing images/s.

    PYTHONPATH=. python bench/bench_tokenize.py [--images 64] [--paper-images 4] [--threads N] [--device cpu]

Random weights (speed does not depend on them) of the ``vqgan`` architecture of a params.yaml profile:
``demo`` (our own small grey model), ``paper`` (UniXGen's MIMIC architecture, 512 px RGB, 32x32 tokens).
Preprocessing is timed on synthetic JPEGs of MIMIC-CXR-JPG's typical size (about 2544 x 3056) and of demo size.
Prints one JSON object; wall time and process CPU time are both reported, because a shared machine
makes wall time noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raygen.config import load_section  # noqa: E402
from raygen.data.images import preprocess  # noqa: E402
from raygen.models.taming_config import VQGANConfig  # noqa: E402
from raygen.models.vqgan import build_vqgan  # noqa: E402
from raygen.stages.vqgan import VqganParams  # noqa: E402

PARAMS = REPO / "params.yaml"


def profile_vqgan(profile: str) -> VQGANConfig:
    """The VQ-GAN architecture of params.yaml's ``vqgan`` section under ``profile``."""
    return load_section(PARAMS, "vqgan", VqganParams, profile).model_config()


def time_encode(preset: str, images: int, batch: int, device: torch.device) -> dict:
    cfg = profile_vqgan(preset)
    vq = build_vqgan(cfg).eval().to(device)
    x = torch.rand(batch, cfg.in_channels, cfg.resolution, cfg.resolution, device=device) * 2 - 1
    vq.encode_ids(x[:1])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu, done = time.perf_counter(), time.process_time(), 0
    while done < images:
        vq.encode_ids(x)
        done += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "preset": preset,
        "resolution": cfg.resolution,
        "grid": list(cfg.grid),
        "batch": batch,
        "images": done,
        "images_per_s": round(done / wall, 2),
        "cpu_s_per_image": round(cpu / done, 4),
    }


def time_preprocess(shape: tuple[int, int], resolution: int, channels: int, images: int) -> dict:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    grey = (127 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 8, shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    wall = time.perf_counter()
    for _ in range(images):
        with Image.open(io.BytesIO(data)) as img:
            preprocess(img.convert("L"), resolution, channels)
    wall = time.perf_counter() - wall
    return {
        "jpeg": f"{shape[1]}x{shape[0]}",
        "resolution": resolution,
        "channels": channels,
        "images_per_s_one_process": round(images / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="demo-preset images to encode")
    parser.add_argument("--paper-images", type=int, default=4, help="paper-preset images to encode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with torch.inference_mode():
        results = {
            "machine": {
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "device": str(device),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "torch": torch.__version__,
            },
            "encode": [
                time_encode("demo", args.images, 16, device),
                time_encode("paper", args.paper_images, 2, device),
            ],
            "preprocess": [time_preprocess((472, 512), 128, 1, 32), time_preprocess((3056, 2544), 512, 3, 4)],
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
