"""`python -m raygen <stage>`: crashes in the stage's log, hand-over records, the checkout's run lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raygen.pipeline import handover, run_lock

REPO = Path(__file__).resolve().parents[1]


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "co"
    shutil.copytree(REPO / "raygen", root / "raygen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def run_tables(root: Path, **env: str) -> subprocess.CompletedProcess:
    (root / "metrics.json").write_text("{}")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "raygen",
            "tables",
            "--params",
            "params.yaml",
            "--profile",
            "smoke",
            "--log",
            "logs/tables.log",
            "--metrics",
            "metrics.json",
            "--out",
            "out",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root), **env},
    )


def test_an_import_time_crash_lands_in_the_stage_log(tmp_path):
    root = checkout(tmp_path)
    module = root / "raygen/stages/tables.py"
    module.write_text(module.read_text() + 'raise ImportError("a broken import in tables")\n')
    (root / "logs").mkdir()
    (root / "logs/tables.log").write_text("yesterday's log\n")
    proc = run_tables(root)
    assert proc.returncode != 0
    log = (root / "logs/tables.log").read_text()
    assert "ImportError: a broken import in tables" in log and "Traceback" in log
    assert "yesterday" not in log, "each run starts a fresh log"


def test_records_are_written_for_snakemake_jobs_only(tmp_path):
    root = checkout(tmp_path)
    records = tmp_path / "records"
    module = root / "raygen/stages/tables.py"
    module.write_text(module.read_text() + "def main(argv=None):\n    return 0\n")  # a stage that succeeds at once
    assert run_tables(root).returncode == 0
    assert not records.exists()
    assert run_tables(root, RAYGEN_HANDOVER_DIR=str(records)).returncode == 0
    (done,) = records.glob("*.json")
    assert done.name == "tables.done.json"
    record = json.loads(done.read_text())
    assert record["ran_with_profile"] == "smoke" and "raygen/stages/tables.py" in record["fingerprint"]["code"]


def test_a_stage_that_fails_leaves_only_its_start_record(tmp_path):
    root = checkout(tmp_path)
    module = root / "raygen/stages/tables.py"
    module.write_text(module.read_text() + "def main(argv=None):\n    return 3\n")
    records = tmp_path / "records"
    assert run_tables(root, RAYGEN_HANDOVER_DIR=str(records)).returncode == 3
    assert [p.name for p in records.glob("*.json")] == ["tables.start.json"]
    assert handover.finished_stages(records) == []


def fingerprinted(root: Path, profile: str | None = "smoke") -> dict:
    shutil.copytree(REPO / "raygen", root / "raygen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return {"address": "tables", "ran_with_profile": profile, "fingerprint": handover.fingerprint(root, "tables")}


def test_a_record_is_truthful_only_while_params_profile_and_code_are_unchanged(tmp_path):
    root = tmp_path / "co"
    record = fingerprinted(root, profile=None)
    assert handover.truthful(record, root) is None
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tables"]["decimals"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert handover.truthful(record, root) == "changed while it ran: params tables"
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "raygen/io.py").write_text((root / "raygen/io.py").read_text() + "# edited\n")
    assert "raygen/io.py" in handover.truthful(record, root)
    # Another profile than params.yaml's: never recorded.
    other = fingerprinted(tmp_path / "co2", profile="smoke")
    assert "ran with profile 'smoke'" in handover.truthful(other, tmp_path / "co2")


def test_the_dvc_address_of_a_foreach_stage_names_its_key():
    assert handover.dvc_address("train_classifier", ["--arm", "real+50", "--out", "x"]) == "train_classifier@real+50"
    assert handover.dvc_address("tables", ["--out", "x"]) == "tables"
    with pytest.raises(ValueError, match="--arm"):
        handover.dvc_address("train_classifier", ["--out", "x"])


def test_the_run_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from raygen.pipeline import run_lock; "
            "run_lock.acquire(Path(sys.argv[1]), 'snakemake run r1'); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    try:
        with pytest.raises(run_lock.CheckoutBusy, match=r"snakemake run r1 \(pid \d+"):
            run_lock.claim_for_stage(tmp_path, "tables")
    finally:
        holder.kill()
        holder.wait()
    run_lock.claim_for_stage(tmp_path, "tables")  # a killed holder leaves no stale lock
    assert run_lock.holder(tmp_path)["what"] == "raygen tables"
    run_lock.release(tmp_path)


def test_jobs_of_the_holding_run_pass(tmp_path, monkeypatch):
    token = run_lock.acquire(tmp_path, "snakemake run r2")
    try:
        monkeypatch.setenv(run_lock.TOKEN_ENV, token)
        run_lock.claim_for_stage(tmp_path, "tables")  # no error: a job of the run that holds the lock
        monkeypatch.setenv(run_lock.TOKEN_ENV, "another-run")
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pathlib import Path; import sys; from raygen.pipeline import "
                "run_lock; run_lock.claim_for_stage(Path(sys.argv[1]), 'tables')",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
        )
        assert child.returncode != 0 and "snakemake run r2" in child.stderr
    finally:
        run_lock.release(tmp_path)


def test_snakemake_refuses_to_start_while_dvc_lists_a_live_process(tmp_path):
    (tmp_path / ".dvc/tmp").mkdir(parents=True)
    (tmp_path / ".dvc/tmp/rwlock").write_text(
        json.dumps({"write": {str(tmp_path / "out"): {"pid": os.getppid(), "cmd": "dvc repro"}}, "read": {}})
    )
    with pytest.raises(run_lock.CheckoutBusy, match="DVC is running in this checkout .*`dvc repro`"):
        run_lock.start_snakemake_run(tmp_path, "r3")
    assert run_lock.holder(tmp_path) is None, "a refused start never claims the checkout"
