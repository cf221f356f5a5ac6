"""The whole pipeline at the `smoke` profile, and the promise that Snakemake and DVC tell one truth about it.

One Snakemake run (MLflow on) in a throw-away copy of the workflow is shared by the tests; it goes through
the SLURM profile, every job an sbatch job on a local single-node cluster, wherever that cluster can run.
Every declared output exists, a second run has nothing to do, the hand-over leaves `dvc status` clean,
and MLflow holds one parent run with the stage runs under it (checked through the REST API and in a
browser). Then, each against both tools (`dvc repro`): a params edit, a code edit and new weights rerun
what they affect; runtime settings and other profiles' overlays rerun nothing; the hand-over records only
what a run built (`--touch`, `--until`, a failing job, a `--config` profile); a lost checkpoint is
rebuilt; the two tools never run on one checkout at once; `--report` holds the tables and figures. A
whole pipeline through DVC from the start is tests/test_rehearsal.py's `dvc exp run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from slurm_local import POLLING, PROFILE, local_cluster, submitting_env_profile
from workflow_copy import BIN, dvc_changed, expand_foreach, lock_entries, make_copy, planned, set_params, tool

from raygen.io import sha256_file
from raygen.pipeline import handover
from raygen.stages import BY_NAME, STAGE_NAMES
from raygen.tracking import metric_name

# The shared run goes through SLURM where it can: 13 sbatch jobs, one after another on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def stage_instances(root: Path) -> dict[str, dict]:
    """dvc.yaml's stages, a foreach stage expanded per key (``train_classifier@real`` ...) with ``${key}`` /
    ``${item.x}`` filled in; value: (log path, benchmark path, stage definition)."""
    out = {}
    for name, stage in expand_foreach(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]).items():
        stem = name.replace("@", "/")  # logs/train_classifier/real+50.log, as the stage's --log says
        out[name] = {"log": f"logs/{stem}.log", "benchmark": f"benchmarks/{stem}.tsv", "stage": stage}
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
    workflow = api.workflow(resource_settings=ResourceSettings(cores=2), snakefile=root / "workflow/Snakefile",
                            workdir=root)
    workflow.dag(DAGSettings()).execute_workflow(executor="local")
"""


def run_snakemake(root: Path, env: dict[str, str]) -> None:
    """Run the workflow through the Snakemake Python API, in a child process.

    In a child so that Snakemake's threads and logging state never leak into the test process
    (a later fork there could inherit a held lock).
    """
    proc = subprocess.run([sys.executable, "-c", SNAKEMAKE_API_RUN, str(root)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str | None]:
    """The local SLURM cluster for this module: None when it runs, else why it cannot (not root, no SLURM)."""
    with local_cluster() as unavailable:
        yield unavailable


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cluster) -> tuple[Path, Path]:
    """One whole smoke run through Snakemake (MLflow on), shared by the tests below; (root, mlflow.db).

    It runs through the SLURM profile, every job an sbatch job on the local cluster, wherever that cluster
    runs or can be started (as root: CI, where a failure to start it is a failure); without root and without a
    running cluster on Snakemake's local executor, and the test of the SLURM path says why it was skipped. One
    run serves both: a second whole pipeline would cost minutes."""
    base = tmp_path_factory.mktemp("smk")
    db = base / "mlflow.db"
    env = {
        **os.environ,
        "RAYGEN_TRACKING": "on",
        "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
        "RAYGEN_PIPELINE_RUN": "smoke-test",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    root = make_copy(base / "wf", "smoke")
    if cluster is None:
        submitting_env_profile(root)
        tool(root, "snakemake", "--workflow-profile", PROFILE, "--config", "profile=smoke", *POLLING, env=env)
    else:
        run_snakemake(root, env)
    return root, db


def test_every_job_of_the_smoke_run_went_through_sbatch(finished, cluster):
    """Each job an sbatch job that SLURM knows, finished, in the cpu partition, with no GPU asked for."""
    if cluster is not None:
        pytest.skip(f"the smoke run used the local executor: {cluster}")
    root, _ = finished
    logs = sorted((root / ".snakemake/slurm_logs").rglob("*.log"))  # the plugin keeps one per job, by SLURM id
    by_job = {int(p.stem): p.relative_to(root / ".snakemake/slurm_logs").parts[0].removeprefix("rule_") for p in logs}
    arms = BY_NAME["train_classifier"].instances
    stages = [name for name in STAGE_NAMES if name != "train_classifier"] + ["train_classifier"] * len(arms)
    assert sorted(by_job.values()) == sorted(stages), by_job
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", f"--jobs={','.join(map(str, by_job))}", "-o", "%i|%T|%P|%k|%b"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen = {int(i): rest for i, *rest in (line.split("|") for line in out.split())}
    for job, stage in by_job.items():
        state, partition, comment, gres = seen[job]
        assert (state, partition, gres) == ("COMPLETED", "cpu", "N/A"), (stage, seen[job])
        assert re.fullmatch(rf"rule_{stage}(_wildcards_.*)?", comment), (stage, comment)


def test_snakemake_runs_everything_once_and_hands_over_to_dvc(finished):
    root, db = finished
    missing = [str(p.relative_to(root)) for p in declared_outputs(root) if not p.exists()]
    assert not missing, f"declared outputs not produced: {missing}"
    for name, instance in stage_instances(root).items():
        assert (root / instance["log"]).stat().st_size > 0, name
        assert (root / instance["benchmark"]).exists(), name
    assert_results_are_complete(root)
    assert planned(root) == set(), "a second run must have nothing to do"
    assert dvc_changed(root) == set(), "the hand-over must leave dvc status clean"
    tracked = [
        e["path"] for stage in lock_entries(root).values() for e in stage.get("deps", []) + stage.get("outs", [])
    ]
    assert "data/smoke/download-complete.json" in tracked and "data/smoke" not in tracked, (
        "the data tree itself is never hashed into DVC's cache; its marker stands for it"
    )

    with sqlite3.connect(db) as conn:
        stages = {row[0] for row in conn.execute("select value from tags where key = 'raygen.stage'")}
        groups = {row[0] for row in conn.execute("select value from tags where key = 'raygen.pipeline_run'")}
    tracked = {"vqgan", "embed_text", "train_decoder", "synthesize", "train_classifier", "evaluate", "tables"}
    assert tracked <= stages, stages
    assert groups == {"smoke-test"}
    assert_mlflow_ui_lists_runs(db, tracked, root, root.parent)


def test_a_params_edit_reruns_that_stage_and_what_follows_in_both_tools(finished):
    root, _ = finished
    original = (root / "params.yaml").read_text()
    try:
        for section, key, value, expected in (
            (
                "train_decoder",
                "steps",
                21,
                {
                    "train_decoder",
                    "synthesize",
                    "train_classifier@real+50",
                    "train_classifier@real+100",
                    "evaluate",
                    "tables",
                },
            ),  # real reads no synthetic
            ("evaluate", "n_boot", 40, {"evaluate", "tables"}),
        ):
            set_params(root, lambda p, s=section, k=key, v=value: p["profiles"]["smoke"][s].update({k: v}))
            assert planned(root) == expected, section
            assert dvc_changed(root) == {section}
            (root / "params.yaml").write_text(original)
    finally:
        (root / "params.yaml").write_text(original)


def test_runtime_settings_and_other_profiles_rerun_nothing(finished):
    root, _ = finished
    original = (root / "params.yaml").read_text()
    try:
        for edit in (
            lambda p: p["runtime"]["evaluate"].update(workers=1),
            lambda p: p["profiles"]["smoke"]["runtime"]["train_decoder"].update(checkpoint_every=3),
            lambda p: p["profiles"]["paper"]["evaluate"].update(n_boot=70),
            lambda p: p["inputs"].update(chexnet="weights/chexnet"),
        ):
            set_params(root, edit)
            assert planned(root) == set()
            assert dvc_changed(root) == set()
            (root / "params.yaml").write_text(original)
    finally:
        (root / "params.yaml").write_text(original)


@contextlib.contextmanager
def edited(path: Path, restore_mtime: bool = True):
    """Append a comment line to a source file; restore its bytes afterwards, and its mtime unless told
    not to (a revert written now, as an editor or git would, is newer than the outputs built meanwhile)."""
    text, stat = path.read_text(), path.stat()
    path.write_text(text + "# an edit\n")
    try:
        yield
    finally:
        path.write_text(text)
        if restore_mtime:
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_code_edit_reruns_the_stage_in_both_tools_and_is_recorded(finished):
    root, _ = finished
    with edited(root / "raygen/stages/evaluate.py"):
        assert planned(root) == {"evaluate", "tables"}
        assert dvc_changed(root) == {"evaluate"}
    with edited(root / "raygen/config.py"):  # every stage reads params through it
        assert dvc_changed(root) == set(stage_instances(root))
    assert planned(root) == set() and dvc_changed(root) == set()
    with edited(root / "raygen/stages/tables.py", restore_mtime=False):
        run = tool(root, "snakemake", "--cores", "1")
        assert "DVC hand-over: recorded tables in dvc.lock" in run.text
        assert dvc_changed(root) == set(), "the rerun under the new code is recorded"
    tool(root, "snakemake", "--cores", "1")  # back to the original code, recorded again
    assert dvc_changed(root) == set() and planned(root) == set()


def test_new_pretrained_weights_rerun_what_reads_them_in_both_tools(finished):
    root, _ = finished
    weight = root / "weights/torchxrayvision/chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    weight.write_bytes(b"a new release file")
    try:
        arms = {"train_classifier@real", "train_classifier@real+50", "train_classifier@real+100"}
        assert planned(root) == arms | {"evaluate", "tables"}
        assert dvc_changed(root) == arms | {"evaluate"}
    finally:
        weight.unlink()
    (root / "weights/torchxrayvision/README.md").write_text("edited README\n")  # READMEs are no inputs
    assert planned(root) == set() and dvc_changed(root) == set()


def test_the_hand_over_records_only_what_this_run_built(finished):
    root, _ = finished
    original = (root / "params.yaml").read_text()
    lock = lock_entries(root)
    try:
        # --touch marks outputs current without running anything: nothing may be recorded.
        with edited(root / "raygen/stages/tables.py", restore_mtime=False):
            touch = tool(root, "snakemake", "--cores", "1", "--touch")
            assert "recorded" not in touch.text
            assert dvc_changed(root) == {"tables"} and lock_entries(root) == lock
        # A params edit, then an upstream target (--until): only the stage that ran is recorded.
        set_params(root, lambda p: p["profiles"]["smoke"]["tables"].update(decimals=4))
        # A finished-looking record that a killed run with the same run id left behind is not this run's.
        stale = root / ".raygen/handover/reused-id/tables.done.json"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text(
            json.dumps(
                {"address": "tables", "ran_with_profile": "smoke", "fingerprint": handover.fingerprint(root, "tables")}
            )
        )
        up = tool(
            root,
            "snakemake",
            "--cores",
            "1",
            "--forcerun",
            "evaluate",
            "--until",
            "evaluate",
            env={"RAYGEN_PIPELINE_RUN": "reused-id", "RAYGEN_HANDOVER_DIR": str(stale.parent)},
        )
        assert "DVC hand-over: recorded evaluate in dvc.lock" in up.text, up.text[-2000:]
        assert dvc_changed(root) == {"tables"} and lock_entries(root)["tables"] == lock["tables"]
        (root / "params.yaml").write_text(original)
        # A failing job is not recorded (its input is not JSON; bad params would stop Snakemake before any job).
        metrics = root / "results/evaluate/metrics.json"
        good, stat = metrics.read_bytes(), metrics.stat()
        metrics.write_text("{")
        failed = tool(root, "snakemake", "--cores", "1", "--forcerun", "tables", "--until", "tables", check=False)
        metrics.write_bytes(good)
        os.utime(metrics, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert failed.returncode != 0 and "recorded tables" not in failed.text
        assert lock_entries(root)["tables"] == lock["tables"]
        assert "metrics.json: missing or not a JSON object" in (root / "logs/tables.log").read_text()
        # A profile from --config that params.yaml does not say: DVC would pair other params with it.
        set_params(root, lambda p: p.update(profile="demo"))
        other = tool(
            root,
            "snakemake",
            "--cores",
            "1",
            "--config",
            "profile=smoke",
            "--forcerun",
            "tables",
            "results/tables/tables.md",
        )
        assert "not recorded: tables (ran with profile 'smoke', params.yaml says 'demo')" in other.text
        assert lock_entries(root)["tables"] == lock["tables"]
    finally:
        (root / "params.yaml").write_text(original)
        # The profile-override run above built tables without recording them: rebuild to record.
        tool(root, "snakemake", "--cores", "1", "--forcerun", "tables")
    assert dvc_changed(root) == set() and planned(root) == set()


def test_a_missing_checkpoint_is_rebuilt(finished):
    """What a `kill -9` during `snakemake --forcerun train_decoder` leaves: the tables, no checkpoint."""
    root, _ = finished
    model = root / "results/train_decoder/model.ckpt"
    kept = model.with_suffix(".kept")
    model.rename(kept)
    try:
        assert "train_decoder" in planned(root)
    finally:
        kept.rename(model)


HOLD = """
import sys, time
from pathlib import Path
from raygen.pipeline import run_lock
if sys.argv[1] == "snakemake":
    run_lock.start_snakemake_run(Path.cwd(), "holder-run")
else:
    run_lock.claim_for_stage(Path.cwd(), "tables")
print("held", flush=True)
time.sleep(60)
"""


def holding(root: Path, as_what: str, env: dict | None = None) -> subprocess.Popen:
    """A process that holds the checkout as a Snakemake run or as a DVC stage, until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, as_what],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_dvc_and_snakemake_never_run_on_one_checkout_at_once(finished):
    root, _ = finished
    tables = root / "results/tables/tables.md"
    before = tables.stat().st_mtime_ns
    holder = holding(root, "snakemake")
    try:
        started = time.monotonic()
        dvc = tool(root, "dvc", "repro", "--force", "tables", check=False)
        assert dvc.returncode != 0 and "Unable to acquire lock" in dvc.text
        assert time.monotonic() - started < 30
        stage = subprocess.run(
            [
                sys.executable,
                "-m",
                "raygen",
                "tables",
                "--params",
                "params.yaml",
                "--log",
                "logs/tables.log",
                "--metrics",
                "results/evaluate/metrics.json",
                "--out",
                "results/tables",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert stage.returncode == 1 and "snakemake run holder-run" in stage.stderr
    finally:
        holder.kill()
        holder.wait()
    holder = holding(root, "dvc", env={"DVC_STAGE": "tables"})
    try:
        smk = tool(root, "snakemake", "--cores", "1", "--forcerun", "tables", check=False)
        assert smk.returncode != 0 and "dvc stage tables" in smk.text and "is using this checkout" in smk.text
    finally:
        holder.kill()
        holder.wait()
    assert tables.stat().st_mtime_ns == before, "neither tool may touch the outputs of the other's run"
    assert planned(root) == set()


def test_snakemake_report_holds_the_tables_and_figures(finished):
    root, _ = finished
    tool(root, "snakemake", "--report", "report.zip")
    import zipfile

    names = zipfile.ZipFile(root / "report.zip").namelist()
    assert any(n.endswith("tables.md") for n in names), names
    assert any(n.endswith("roc.png") for n in names) and any(n.endswith("samples_per_class.png") for n in names)


def assert_results_are_complete(root: Path) -> None:
    """The tables and metrics hold what the paper reports, for every arm and class."""
    metrics = json.loads((root / "results/evaluate/metrics.json").read_text())
    assert set(metrics["classifier"]) == {"real", "real+50", "real+100"}
    # The demo's pinned network measures FID and judges conditional fidelity, named by its hash.
    pinned = f"raygen-demo-densenet121:{sha256_file(root / 'weights/demo/fid-densenet121.ckpt')[:12]}"
    assert metrics["fidelity"]["fid"]["extractor"] == metrics["conditional_fidelity"]["classifier"] == pinned
    assert metrics["fidelity"]["ms_ssim_between_seeds"]["n"] == metrics["counts"]["real_heldout"]
    assert metrics["fidelity"]["ms_ssim_real_pairs"]["n"] == metrics["fidelity"]["fid_equal_n"]["n_per_half"]
    table3 = (root / "results/tables/table3.csv").read_text().splitlines()
    assert len(table3) == 1 + 10 and "Pleural Effusion" in "".join(table3)
    tables = (root / "results/tables/tables.md").read_text()
    assert tables.count("## Table") == 3 and "0.7149" in tables  # the paper's Atelectasis AUROC beside ours
    syn = json.loads((root / "results/synthesize/meta.json").read_text())
    import pandas as pd

    real_train = int((pd.read_csv(root / "results/cohort/classifier.csv")["split"] == "train").sum())
    assert real_train - 10 < syn["aug_100_images"] <= real_train  # the 100% arm: the real training size (floored)


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


@contextlib.contextmanager
def mlflow_ui(db: Path, log: Path):
    """`mlflow ui` as the README starts it, on 127.0.0.1 (its log in ``log``); yields (port, experiment id)."""
    port = free_port()
    with log.open("w") as sink:
        ui = subprocess.Popen(
            [BIN / "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}"]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    experiments = api(port, "experiments/search", {"max_results": 100})["experiments"]
                    break
                except OSError:
                    if ui.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"mlflow ui did not start: {log.read_text()[-2000:]}") from None
                    time.sleep(1)
            ids = [e["experiment_id"] for e in experiments if e["name"] == "raygen-smoke"]
            assert ids, [e["name"] for e in experiments]
            yield port, ids[0]
        finally:
            ui.terminate()
            ui.wait(timeout=30)


def values(entries: list[dict]) -> dict:
    """MLflow's REST lists of {key, value} as a dict."""
    return {e["key"]: e["value"] for e in entries}


def pipeline_runs(port: int, experiment: str) -> tuple[dict, list[dict]]:
    """The one parent run of the smoke pipeline, and its stage runs (as the REST API returns them)."""
    runs = api(port, "runs/search", {"experiment_ids": [experiment], "max_results": 200})["runs"]
    parents = [r for r in runs if values(r["data"].get("tags", [])).get("raygen.role") == "pipeline"]
    assert len(parents) == 1, [r["info"]["run_name"] for r in parents]
    return parents[0], [r for r in runs if r is not parents[0]]


def assert_mlflow_ui_lists_runs(db: Path, expected: set[str], root: Path, tmp: Path) -> None:
    """Through `mlflow ui`'s REST API: one parent run for the invocation, with every stage's params and the
    headline metrics of summary.json; every stage run nested under it, the classifier's named by arm."""
    with mlflow_ui(db, tmp / "mlflow-ui.log") as (port, experiment):
        parent, stages = pipeline_runs(port, experiment)
    tags = [values(r["data"].get("tags", [])) for r in stages]
    assert expected <= {t["raygen.stage"] for t in tags}
    required = {"raygen.stage", "raygen.params_hash", "raygen.pipeline_run", "mlflow.source.git.commit"}
    assert all(required <= set(t) for t in tags), [sorted(required - set(t)) for t in tags]
    assert all(t["mlflow.parentRunId"] == parent["info"]["run_id"] for t in tags)
    assert all(r["info"]["status"] == "FINISHED" for r in [parent, *stages])
    assert {f"train_classifier[{arm}]" for arm in ("real", "real+50", "real+100")} <= {
        r["info"]["run_name"] for r in stages
    }
    assert parent["info"]["run_name"] == "pipeline smoke-test"
    params = values(parent["data"]["params"])
    assert params["profile"] == "smoke" and {f"{s}.seed" for s in ("cohort", "vqgan", "train_decoder")} <= set(params)
    summary = json.loads((root / "results/evaluate/summary.json").read_text())
    headline = {metric_name(k): v for k, v in summary.items() if isinstance(v, float)}
    assert values(parent["data"]["metrics"]) == pytest.approx(headline)


HEADLINE = ("real/macro_auroc", "real_plus_50/macro_auroc", "real_plus_100/macro_auroc", "fid", "ms_ssim")
# In the page: the text of a run's row, the column selector's entry for a metric, each cell of a row by column.
ROW_TEXT = "[...document.querySelectorAll(`[row-id='${ID}']`)].map(r => r.innerText).join(' ')"
COLUMN_ENTRY = "[...document.querySelectorAll('span[title]')].find(s => s.title === NAME)"
ROW_CELLS = """Object.fromEntries([...document.querySelectorAll(`[row-id='${ID}'] .ag-cell`)]
    .map(c => [c.getAttribute('col-id'), c.innerText]))"""


def test_mlflow_ui_compares_pipeline_runs_in_a_browser(finished, tmp_path):
    """A real browser on the MLflow UI: the experiment's training-runs view lists the pipeline's parent run,
    and the headline metrics, added as columns through the column selector, show its values."""
    from cdp import Browser

    _, db = finished
    with mlflow_ui(db, tmp_path / "mlflow-ui.log") as (port, experiment):
        parent, _ = pipeline_runs(port, experiment)
        metrics = values(parent["data"]["metrics"])
        browser = Browser(tmp_path / "chromium-profile", width=2400, height=900)
        try:
            # MLflow 3.17 opens an experiment on its GenAI pages unless the address names the workflow type.
            page = browser.page(
                f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"
            )
            row_text = ROW_TEXT.replace("${ID}", parent["info"]["run_id"])
            browser.wait_for(page, f"({row_text}).includes('pipeline smoke-test')", timeout=120)
            browser.evaluate(
                page, "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Columns').click()"
            )
            for name in HEADLINE:
                entry = COLUMN_ENTRY.replace("NAME", json.dumps(name))
                browser.wait_for(page, f"!!{entry}")
                browser.evaluate(page, f"{entry}.click()")
            cells = ROW_CELLS.replace("${ID}", parent["info"]["run_id"])
            wanted = json.dumps([f"metrics.`{name}`" for name in HEADLINE])
            shown = browser.wait_for(page, f"(() => {{ const c = {cells}; return {wanted}.every(k => c[k]) && c; }})()")
        finally:
            browser.close()
    for name in HEADLINE:
        text = shown[f"metrics.`{name}`"]
        decimals = len(text.partition(".")[2])  # the table rounds; the value must agree to what it shows
        assert abs(float(text) - metrics[name]) <= 0.51 * 10**-decimals, (name, text, metrics[name])
