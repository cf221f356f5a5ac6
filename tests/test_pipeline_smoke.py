"""The whole pipeline at the `smoke` profile, through the Snakemake API and through `dvc repro`.

Each run happens in a throw-away copy of the workflow files (the package itself is imported from the
installed checkout). Checks: every declared output exists, a second Snakemake run has nothing to do,
Snakemake's success hook hands the outputs to DVC (so `dvc status` is clean), `dvc repro` on a fresh
copy produces the same outputs, and the training stages logged MLflow runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def smoke_copy(root: Path) -> Path:
    root.mkdir()
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "workflow", root / "workflow")
    # DVC stages depend on the package's code too.
    shutil.copytree(REPO / "raygen", root / "raygen", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([BIN / "dvc", "init", "-q"], cwd=root, check=True)
    return root


def stage_instances(root: Path) -> dict[str, dict]:
    """dvc.yaml's stages, a foreach stage expanded per key (``train_classifier@real`` ...), with
    ``${profile}`` / ``${key}`` filled in; value: (log path, benchmark path, stage definition)."""
    out = {}
    for name, stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            for key in stage["foreach"]:
                text = yaml.safe_dump(stage["do"]).replace("${key}", key)
                out[f"{name}@{key}"] = {"log": f"logs/{name}/{key}.log", "benchmark": f"benchmarks/{name}/{key}.tsv",
                                        "stage": yaml.safe_load(text)}
        else:
            out[name] = {"log": f"logs/{name}.log", "benchmark": f"benchmarks/{name}.tsv", "stage": stage}
    return out


def declared_outputs(root: Path) -> list[Path]:
    paths = []
    for instance in stage_instances(root).values():
        for key in ("outs", "metrics", "plots"):
            for entry in instance["stage"].get(key, []):
                name = entry if isinstance(entry, str) else next(iter(entry))
                paths.append(root / name.replace("${profile}", "smoke"))
    return paths


SNAKEMAKE_API_RUN = """
import sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings

root = Path(sys.argv[1])
with SnakemakeApi(OutputSettings(quiet={"progress", "rules"})) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=2), snakefile=root / "Snakefile", workdir=root)
    workflow.dag(DAGSettings()).execute_workflow(executor="local")
"""


def run_snakemake(root: Path) -> None:
    """Run the workflow through the Snakemake Python API, in a child process.

    In a child so that Snakemake's threads and logging state never leak into the test process
    (a later fork there could inherit a held lock).
    """
    proc = subprocess.run([sys.executable, "-c", SNAKEMAKE_API_RUN, str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.fixture()
def env(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("RAYGEN_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RAYGEN_PIPELINE_RUN", "smoke-test")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "mlflow.db"


def test_snakemake_runs_everything_once_and_hands_over_to_dvc(tmp_path, env):
    root = smoke_copy(tmp_path / "smk")
    run_snakemake(root)
    missing = [str(p.relative_to(root)) for p in declared_outputs(root) if not p.exists()]
    assert not missing, f"declared outputs not produced: {missing}"
    for name, instance in stage_instances(root).items():
        assert (root / instance["log"]).stat().st_size > 0, name
        assert (root / instance["benchmark"]).exists(), name
    assert_results_are_complete(root)

    again = subprocess.run(
        [BIN / "snakemake", "-n", "--cores", "1"], cwd=root, capture_output=True, text=True, check=True
    )
    assert "Nothing to be done" in again.stdout + again.stderr

    status = subprocess.run([BIN / "dvc", "status"], cwd=root, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout, status.stdout

    with sqlite3.connect(env) as db:
        stages = {row[0] for row in db.execute("select value from tags where key = 'raygen.stage'")}
        groups = {row[0] for row in db.execute("select value from tags where key = 'raygen.pipeline_run'")}
    tracked = {"vqgan", "embed_text", "train_decoder", "synthesize", "train_classifier", "evaluate", "tables"}
    assert tracked <= stages, stages
    assert groups == {"smoke-test"}
    assert_mlflow_ui_lists_runs(env, tracked)

    # A change in one section reruns that stage and what follows it, nothing else, in both tools.
    original = (root / "params.yaml").read_text()
    for section, key, value, expected, arms in (
        ("train_decoder", "steps", 21, {"train_decoder", "synthesize", "train_classifier", "evaluate", "tables"},
         {"real+50", "real+100"}),  # the real arm reads no synthetic data
        ("evaluate", "n_boot", 40, {"evaluate", "tables"}, set()),
    ):
        params = yaml.safe_load(original)
        params["profiles"]["smoke"][section][key] = value
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dry = subprocess.run([BIN / "snakemake", "-n", "--cores", "1"], cwd=root, capture_output=True, text=True,
                             check=True)
        planned = set(re.findall(r"^rule (\w+):$", dry.stdout, re.M)) - {"all"}
        assert planned == expected, (section, planned)
        assert set(re.findall(r"^    wildcards: arm=(\S+)$", dry.stdout, re.M)) == arms, dry.stdout
        status = subprocess.run([BIN / "dvc", "status"], cwd=root, capture_output=True, text=True, check=True)
        changed = set(re.findall(r"^([\w@+]+):$", status.stdout, re.M))
        assert changed == {section}, status.stdout
    (root / "params.yaml").write_text(original)


def assert_results_are_complete(root: Path) -> None:
    """The tables and metrics hold what the paper reports, for every arm and class."""
    metrics = json.loads((root / "results/evaluate/metrics.json").read_text())
    assert set(metrics["classifier"]) == {"real", "real+50", "real+100"}
    assert metrics["fidelity"]["fid"]["extractor"].startswith("raygen-classifier-penultimate:")
    assert metrics["fidelity"]["ms_ssim_between_seeds"]["n"] == metrics["counts"]["real_heldout"]
    table3 = (root / "results/tables/table3.csv").read_text().splitlines()
    assert len(table3) == 1 + 10 and "Pleural Effusion" in "".join(table3)
    tables = (root / "results/tables/tables.md").read_text()
    assert tables.count("## Table") == 3 and "0.7149" in tables  # the paper's Atelectasis AUROC beside ours
    syn = json.loads((root / "results/synthesize/meta.json").read_text())
    import pandas as pd

    real_train = int((pd.read_csv(root / "results/cohort/classifier.csv")["split"] == "train").sum())
    assert real_train - 10 < syn["aug_100_images"] <= real_train  # the 100% arm: the real training size (floored)


def test_dvc_repro_runs_the_same_pipeline(tmp_path, env, monkeypatch):
    monkeypatch.setenv("RAYGEN_TRACKING", "off")  # MLflow is checked above; here it would add ~5 s per stage
    root = smoke_copy(tmp_path / "dvc")
    proc = subprocess.run([BIN / "dvc", "repro", "--quiet"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    missing = [str(p.relative_to(root)) for p in declared_outputs(root) if not p.exists()]
    assert not missing, missing
    status = subprocess.run([BIN / "dvc", "status"], cwd=root, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(port: int, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def assert_mlflow_ui_lists_runs(db: Path, expected: set[str]) -> None:
    """Start `mlflow ui` as the README says, on 127.0.0.1, and find the runs through its REST API."""
    port = free_port()
    ui = subprocess.Popen(
        [BIN / "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                experiments = api(port, "experiments/search", {"max_results": 100})["experiments"]
                break
            except OSError:
                if ui.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow ui did not start: {ui.stderr.read()[-2000:] if ui.poll() is not None else 'timeout'}")
                time.sleep(1)
        ids = [e["experiment_id"] for e in experiments if e["name"] == "raygen-smoke"]
        assert ids, [e["name"] for e in experiments]
        runs = api(port, "runs/search", {"experiment_ids": ids, "max_results": 100})["runs"]
        names = {r["info"]["run_name"] for r in runs}
        assert expected <= names, names
        tags = {t["key"] for r in runs for t in r["data"].get("tags", [])}
        assert {"raygen.stage", "raygen.params_hash", "raygen.pipeline_run", "mlflow.source.git.commit"} <= tags
        assert all(r["info"]["status"] == "FINISHED" for r in runs)
    finally:
        ui.terminate()
        ui.wait(timeout=30)
