"""The prepared GPU check runs end to end in its CPU dry-run mode and writes its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_dry_run_writes_json_and_a_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "bench/device_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + (tmp_path / "device_check.log").read_text()
    decoder = json.loads((tmp_path / "decoder.json").read_text())
    assert decoder["preset"] == "smoke" and decoder["train_samples_per_s"] > 0
    assert json.loads((tmp_path / "vqgan.json").read_text())["encode_images_per_s"] > 0
    table = (tmp_path / "device_check.md").read_text()
    assert "| decoder training, samples/s |" in table and "Every step finished." in table
    assert "**no**" not in table  # targets are judged for the paper preset only
