"""The whole pipeline at the `smoke` profile, through the Snakemake API and through `dvc repro`.

Each run happens in a throw-away copy of the workflow files (the package itself is imported from the
installed checkout). Checks: every declared output exists, a second Snakemake run has nothing to do,
Snakemake's success hook hands the outputs to DVC (so `dvc status` is clean), `dvc repro` on a fresh
copy produces the same outputs, and the training stages logged MLflow runs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
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


def declared_outputs(root: Path) -> list[Path]:
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                name = entry if isinstance(entry, str) else next(iter(entry))
                paths.append(root / name.replace("${profile}", "smoke"))
    return paths


def run_snakemake(root: Path) -> None:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={"progress", "rules"})) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=2), snakefile=root / "Snakefile", workdir=root
            )
            workflow.dag(DAGSettings()).execute_workflow(executor="local")
    finally:
        os.chdir(cwd)


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
    for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]:
        assert (root / "logs" / f"{stage}.log").stat().st_size > 0, stage
        assert (root / "benchmarks" / f"{stage}.tsv").exists(), stage

    again = subprocess.run(
        [BIN / "snakemake", "-n", "--cores", "1"], cwd=root, capture_output=True, text=True, check=True
    )
    assert "Nothing to be done" in again.stdout + again.stderr

    status = subprocess.run([BIN / "dvc", "status"], cwd=root, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout, status.stdout

    with sqlite3.connect(env) as db:
        stages = {row[0] for row in db.execute("select value from tags where key = 'raygen.stage'")}
        groups = {row[0] for row in db.execute("select value from tags where key = 'raygen.pipeline_run'")}
    assert {"vqgan", "embed_text", "train_decoder"} <= stages
    assert groups == {"smoke-test"}


def test_dvc_repro_runs_the_same_pipeline(tmp_path, env):
    root = smoke_copy(tmp_path / "dvc")
    proc = subprocess.run([BIN / "dvc", "repro", "--quiet"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    missing = [str(p.relative_to(root)) for p in declared_outputs(root) if not p.exists()]
    assert not missing, missing
    status = subprocess.run([BIN / "dvc", "status"], cwd=root, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout
