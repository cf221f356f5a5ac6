"""Bad input stops up front with one line, `raygen <command>: error: ...`, and writes nothing wrong.

Each case pins the message a user sees and that no output was written; docs/errors.md lists them.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raygen.data.classifier_data import read_classifier_manifest
from raygen.data.labels import CLASSES
from raygen.errors import ManifestError
from raygen.io import write_json
from raygen.pipeline.check_params import main as check_params_main

REPO = Path(__file__).resolve().parents[1]


def params_with(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def raygen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raygen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["train_decoder"].update(steps=-5), "train_decoder.steps and batch_size must be >= 1"),
        (lambda p: p["vqgan"].update(steps=-3), "vqgan.steps must be >= 1 to train a VQ-GAN, got -3"),
        (lambda p: p["vqgan"].update(resolution=100), "vqgan.resolution 100 must be a multiple of 8"),
        (
            lambda p: p["vqgan"].update(batch_size=0),
            "vqgan.batch_size, eval_batch_size, checkpoint_every and log_every",
        ),
        (lambda p: p["synthesize"].update(steps=0), "synthesize.steps and batch_size must be >= 1"),
        (lambda p: p["synthesize"].update(cfg=-2.0), "synthesize.temperature and cfg must be >= 0"),
        (lambda p: p["train_classifier"].update(lr=-1.0), "train_classifier.lr must be > 0"),
        (lambda p: p["train_classifier"].update(pretrain_epochs=0), "eval_batch_size, pretrain_epochs must be >= 1"),
        (lambda p: p.update(profile="papr"), "unknown profile 'papr'"),
    ],
)
def test_check_params_refuses_in_one_line(tmp_path, capsys, edit, message):
    path = params_with(tmp_path, edit)
    assert check_params_main(["--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raygen check-params: error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert not re.search(r"(\w+): \1\.", err), "the key is named once, not prefixed with its section again"


def test_a_stage_given_bad_params_says_so_in_one_line_and_writes_nothing(tmp_path):
    path = params_with(tmp_path, lambda p: p["vqgan"].update(steps=-3))
    out = tmp_path / "vqgan"
    proc = raygen(
        "vqgan",
        "--params",
        str(path),
        "--log",
        str(tmp_path / "vqgan.log"),
        "--manifest",
        "none.csv",
        "--jpg-root",
        str(tmp_path),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("raygen vqgan: error: ") and "vqgan.steps must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "Traceback" in (tmp_path / "vqgan.log").read_text(), "the log keeps the whole story"
    assert not out.exists()
    debug = raygen(
        "vqgan",
        "--params",
        str(path),
        "--manifest",
        "none.csv",
        "--jpg-root",
        str(tmp_path),
        "--out",
        str(out),
        "--debug",
        cwd=tmp_path,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def manifest(rows: list[dict]) -> pd.DataFrame:
    base = {"subject_id": 1, "study_id": 1, "path": "p.jpg", "split": "test", "view": "PA", **{c: 0 for c in CLASSES}}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_a_test_image_listed_three_times_is_an_error(tmp_path):
    path = tmp_path / "classifier.csv"
    manifest([{"dicom_id": "a"}, {"dicom_id": "b"}, {"dicom_id": "b"}, {"dicom_id": "b"}]).to_csv(path, index=False)
    with pytest.raises(ManifestError, match=r"1 dicom_id\(s\) listed more than once \(e.g. b\)"):
        read_classifier_manifest(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be >= 1"),
        (["--cfg", "-5"], "must be >= 0"),
        (["--temperature", "-1"], "must be >= 0"),
        (["--steps", "0"], "steps must be >= 1"),
    ],
)
def test_generate_checks_its_arguments_before_loading_a_model(tmp_path, args, message):
    proc = raygen(
        "generate",
        "--prompt",
        "Large right pleural effusion.",
        "--out",
        str(tmp_path / "g.png"),
        "--checkpoint",
        str(tmp_path / "missing.ckpt"),
        *args,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "raygen generate: error:" in proc.stderr and message in proc.stderr
    assert "missing.ckpt" not in proc.stderr  # stopped before any model was looked for


def test_generate_refuses_a_folder_as_output_at_once(tmp_path):
    proc = raygen("generate", "--prompt", "x", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr and "must name a PNG file" in proc.stderr


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644


def test_a_classifier_larger_than_the_synthetic_images_is_refused(tmp_path, capsys):
    path = params_with(tmp_path, lambda p: p["train_classifier"].update(resolution=128))
    assert check_params_main(["--params", str(path)]) == 2
    assert (
        "train_classifier.resolution 128 exceeds the synthetic images' size (vqgan.resolution 96)"
        in capsys.readouterr().err
    )


def test_a_stage_checks_its_whole_profile_before_reading_data(tmp_path):
    """A rule between two other stages' params stops the stage too, as check-params would, before any input is read."""
    path = params_with(tmp_path, lambda p: p["train_classifier"].update(resolution=128))
    out = tmp_path / "real"
    args = ["--manifest", "missing.csv", "--jpg-root", str(tmp_path), "--arm", "real", "--out", str(out)]
    proc = raygen("train_classifier", "--params", str(path), "--log", str(tmp_path / "c.log"), *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("raygen train_classifier: error: ")
    assert "train_classifier.resolution 128 exceeds the synthetic images' size" in proc.stderr
    assert "missing.csv" not in proc.stderr and not out.exists()


def test_generate_without_a_trained_decoder_says_what_to_run(tmp_path):
    proc = raygen(
        "generate",
        "--prompt",
        "x",
        "--out",
        str(tmp_path / "g.png"),
        "--checkpoint",
        str(tmp_path / "model.ckpt"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"raygen generate: error: checkpoint not found: {tmp_path / 'model.ckpt'}" in proc.stderr
    assert not (tmp_path / "g.png").exists()
