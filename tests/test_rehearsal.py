"""The paper profile's code paths, rehearsed on CPU: the `rehearsal` profile (the paper profile with only
sizes changed) downloads a demo-rendered release from a PhysioNet stand-in with basic auth and checksums,
installs random stand-ins of UniXGen's VQ-GAN, CXR-BERT, CheXNet and torchxrayvision in their authors'
formats, and runs every stage through Snakemake and then through `dvc exp run` (tests/rehearsal.py)."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rehearsal import PASSWORD, USER, prepare, run
from workflow_copy import dvc_changed, lock_entries, planned

from raygen.io import sha256_file
from raygen.stages import STAGE_NAMES

# A whole rehearsal (the fixture's Snakemake run, the DVC run) runs close to pytest's default per-test limit on
# 2 cores beside the other test process (times in docs/benchmarks.md), so these tests get a longer one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

WEIGHTS = {
    "vqgan": "weights/unixgen-vqgan/last.ckpt",
    "cxr_bert": "weights/cxr-bert/pytorch_model.bin",
    "chexnet": "weights/chexnet/model.pth.tar",
    "xrv": "weights/torchxrayvision/chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
}


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory) -> tuple[Path, dict]:
    """One rehearsal through Snakemake, MLflow on (to search its store for credentials too)."""
    root = tmp_path_factory.mktemp("rehearsal")
    wf = prepare(root)
    env = {"RAYGEN_TRACKING": "on", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    wall = run(root, "snakemake", env=env)
    (root / "snakemake_wall_s.txt").write_text(f"{wall:.0f}\n")
    return wf, json.loads((wf / "results/evaluate/summary.json").read_text())


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_every_stage_runs_on_the_paper_paths_and_hands_over(rehearsed):
    wf, _ = rehearsed
    marker = json.loads((wf / "data/rehearsal/download-complete.json").read_text())
    assert marker["source"] == "mimic" and marker["groups"] == ["p10"], marker
    files = wf / "data/rehearsal/mimic-cxr-jpg/2.0.0/files"
    assert sorted(p.name for p in files.iterdir()) == ["p10"], "only the requested group is fetched"
    assert planned(wf) == set(), "a second Snakemake run has nothing to do"
    assert dvc_changed(wf) == set(), "the hand-over leaves dvc status clean"
    assert {name.split("@")[0] for name in lock_entries(wf)} == set(STAGE_NAMES)


def test_the_tables_hold_non_degenerate_numbers(rehearsed):
    """Stand-ins that mapped every image to one feature vector would give AUROC 0.5 and FID 0 everywhere."""
    _, summary = rehearsed
    for arm in ("real", "real+50", "real+100"):
        auroc = summary[f"{arm}/macro_auroc"]
        assert finite(auroc) and auroc != 0.5, (arm, auroc)
    assert finite(summary["fid"]) and summary["fid"] > 0
    assert finite(summary["fid_equal_n/generated"]) and summary["fid_equal_n/generated"] > 0
    assert 0 < summary["ms_ssim"] < 1
    assert finite(summary["conditional_fidelity/augmentation"])
    assert summary["extractor"].startswith("torchxrayvision-densenet121-res224-chex:")


def test_results_name_the_pretrained_file_each_stage_used(rehearsed):
    wf, summary = rehearsed
    sha = {name: sha256_file(wf / path) for name, path in WEIGHTS.items()}
    vqgan = json.loads((wf / "results/vqgan/metrics.json").read_text())
    assert vqgan["pretrained"]["checkpoint"] == {"file": WEIGHTS["vqgan"], "sha256": sha["vqgan"]}
    encoder = json.loads((wf / "results/embed_text/meta.json").read_text())["encoder"]
    assert encoder["source"] == "cxr-bert" and encoder["weights_sha256"] == sha["cxr_bert"]
    for arm in ("real", "real+50", "real+100"):
        classifier = json.loads((wf / f"results/train_classifier/{arm}/metrics.json").read_text())
        assert classifier["init_weights"] == {"file": WEIGHTS["chexnet"], "sha256": sha["chexnet"]}, arm
    assert summary["extractor"].endswith(sha["xrv"][:12])


def test_no_credential_reaches_any_file(rehearsed):
    wf, _ = rehearsed
    secrets = (USER.encode(), PASSWORD.encode())
    leaks = [
        str(path.relative_to(wf.parent))
        for path in [*wf.rglob("*"), wf.parent / "mlflow.db"]
        if path.is_file() and any(secret in data for data in [path.read_bytes()] for secret in secrets)
    ]
    assert not leaks, f"credentials written to: {leaks}"
    with sqlite3.connect(wf.parent / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] >= 9


def test_dvc_exp_run_reproduces_the_snakemake_numbers(rehearsed):
    wf, summary = rehearsed
    run(wf.parent, "dvc")
    again = json.loads((wf / "results/evaluate/summary.json").read_text())
    # Every stage that Snakemake runs on fewer threads than the machine's cores sets its own thread count
    # (runtime cpu_threads), so DVC sums in the same order: every number agrees, the arms' too.
    assert again == summary, "the same params, code and threads give the same numbers"
    assert dvc_changed(wf) == set()
    assert yaml.safe_load((wf / "params.yaml").read_text())["profile"] == "rehearsal"


def test_an_existing_local_copy_gives_the_same_cohort(rehearsed, tmp_path):
    """The other way in: the same release as a local MIMIC copy (checked against its SHA256SUMS.txt and linked,
    not downloaded) gives the downloaded run's cohort, row for row."""
    wf, _ = rehearsed
    server = wf.parent / "server"
    data, results = tmp_path / "data", tmp_path / "results"

    def raygen(*args: str) -> None:
        common = ["--params", str(wf / "params.yaml"), "--profile", "rehearsal", "--log", str(tmp_path / "stage.log")]
        proc = subprocess.run([sys.executable, "-m", "raygen", *args[:1], *common, *args[1:]], capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    jpg, reports = server / "mimic-cxr-jpg/2.0.0", server / "mimic-cxr/2.0.0"
    raygen("download", "--out", str(data), "--local-jpg", str(jpg), "--local-reports", str(reports))
    marker = json.loads((data / "download-complete.json").read_text())
    assert marker["source"] == "local" and str(marker["verified"]["jpg"]).startswith("yes"), marker["verified"]
    raygen(
        "sections",
        "--reports-root",
        str(data / "mimic-cxr/2.0.0"),
        "--out",
        str(results / "sectioned.csv"),
        "--prompts",
        str(results / "prompts.csv"),
    )
    raygen(
        "cohort",
        "--jpg-root",
        str(data / "mimic-cxr-jpg/2.0.0"),
        "--sections",
        str(results / "prompts.csv"),
        "--out",
        str(results / "cohort"),
    )
    for name in ("generator.csv", "fid.csv", "classifier.csv"):
        assert (results / "cohort" / name).read_bytes() == (wf / "results/cohort" / name).read_bytes(), name
