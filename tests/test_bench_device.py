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


def test_the_device_runner_fills_every_dvc_interpolation(tmp_path):
    """Without Snakemake or DVC (a bare GPU image) the rehearsal runs dvc.yaml's own commands in order."""
    from rehearsal import stage_commands
    from workflow_copy import make_copy

    from raygen.stages import BY_NAME, STAGE_NAMES

    commands = stage_commands(make_copy(tmp_path / "wf", "rehearsal", git=False))
    arms = BY_NAME["train_classifier"].instances
    assert len(commands) == len(STAGE_NAMES) - 1 + len(arms)
    assert not [c for c in commands if "${" in c], "every ${...} is filled in"
    assert [c.split()[3] for c in commands] == [
        n for n in STAGE_NAMES for _ in (arms if n == "train_classifier" else [0])
    ]
    augmented = [c for c in commands if "--arm real+" in c]
    assert len(augmented) == 2 and all("--synthetic results/synthesize/aug_100.csv" in c for c in augmented)
    [vqgan] = [c for c in commands if c.split()[3] == "vqgan"]  # `python -m raygen vqgan ...`
    assert "--pretrained-ckpt weights/unixgen-vqgan/last.ckpt" in vqgan
