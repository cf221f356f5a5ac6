"""Speed of the demo renderer, one process, and a digest of what it rendered.

Renders the first ``--studies`` studies of the demo plan (``download.demo`` of params.yaml) in this
process, one torch thread, as each worker of the ``download`` stage does, and prints milliseconds per
study, wall and CPU, the best of ``--repeats`` passes (a shared machine's single passes vary with its
load). The SHA-256 over every rendered image says whether two versions of the
renderer draw the same pixels: a speed-up must leave it unchanged, or the dataset (and every number
downstream) changes. Results: docs/benchmarks.md.

    python bench/bench_demo_render.py [--studies 200] [--repeats 3] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import torch
import yaml

from raygen.data.demo.anatomy import load_anatomy
from raygen.data.demo.build import demo_plans, render_study
from raygen.data.demo.params import DemoParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=200, help="first N studies of the demo plan")
    parser.add_argument("--repeats", type=int, default=3, help="passes over them; the fastest counts")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(args.params) as f:
        params = DemoParams(**yaml.safe_load(f)["download"]["demo"])
    plans = demo_plans(params)[: args.studies]
    anatomy = load_anatomy(params.voxel_mm)
    render_study(plans[0], anatomy, params)  # computes the base attenuation, as each worker does first
    wall, cpu = float("inf"), float("inf")
    for _ in range(args.repeats):
        digest = hashlib.sha256()
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        for plan in plans:
            for _, image in render_study(plan, anatomy, params):
                digest.update(image.tobytes())
        wall = min(wall, time.perf_counter() - t_wall)
        cpu = min(cpu, time.process_time() - t_cpu)
    images = sum(len(p.images) for p in plans)
    print(f"{len(plans)} studies, {images} images, best of {args.repeats} passes:")
    print(f"  {1000 * wall / len(plans):.1f} ms per study (wall), {1000 * cpu / len(plans):.1f} ms (CPU)")
    print(f"  pixels sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
