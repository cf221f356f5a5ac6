"""Training speed of the DenseNet-121 classifier (``raygen train_classifier``'s model and step).

    PYTHONPATH=. python bench/bench_classifier.py [--resolutions 64 96 128] [--batches 16 32] [--threads 2]

Times forward + BCE + backward + AdamW on random (B, 1, R, R) inputs in [-1, 1] with 10 labels, in
``channels_last`` as the stage runs it (the stage's augmentation is not included). Prints one JSON
line per setting: images/s over ``--iters`` steps after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from raygen.data.labels import CLASSES
from raygen.models.classifier import build_classifier


def bench(resolution: int, batch: int, iters: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_classifier(in_channels=1).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = (torch.rand(batch, 1, resolution, resolution) * 2 - 1).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, len(CLASSES)) < 0.2).float()
    for i in range(warmup + iters):
        if i == warmup:
            start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return {"resolution": resolution, "batch": batch, "images_per_s": round(iters * batch / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"torch_threads": torch.get_num_threads(), "torch": torch.__version__}))
    for resolution in args.resolutions:
        for batch in args.batches:
            print(json.dumps(bench(resolution, batch, args.iters, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
