"""bench/bench_vqgan.py runs (smoke size, CPU) and reports what it says it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_vqgan_bench_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "vqgan.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench/bench_vqgan.py"),
            "--profile",
            "smoke",
            "--device",
            "cpu",
            "--iters",
            "1",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["tokens"] == [8, 8] and result["batch"] == 2
    assert result["encode_images_per_s"] > 0 and result["decode_images_per_s"] > 0
