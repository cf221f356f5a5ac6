"""The SLURM path (workflow/profiles/slurm): what the executor plugin asks of SLURM for every job of the
paper and smoke profiles, read from the plugin's own sbatch builder. The smoke profile run end to end
through `sbatch` on a single-node cluster is the shared run of tests/test_pipeline_smoke.py.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from slurm_local import PROFILE, submitting_env_profile
from workflow_copy import REPO, make_copy

from raygen.config import runtime_section
from raygen.stages import BY_NAME, STAGE_NAMES

ARMS = BY_NAME["train_classifier"].instances
GPU_STAGES = {"vqgan", "tokenize", "embed_text", "train_decoder", "synthesize", "train_classifier", "evaluate"}

# A dry run in which every job also goes through the SLURM plugin's own sbatch builder: the partition it
# picks (partitions.yaml), get_submit_command and set_gres_string, exactly as Executor.run_job calls them.
SBATCH_CALLS = r"""
import json, sys
from types import SimpleNamespace
from snakemake import cli
from snakemake.executors import dryrun
from snakemake.logging import logger
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry
import snakemake_executor_plugin_slurm as slurm
from snakemake_executor_plugin_slurm.partitions import read_partition_file
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

out, argv = sys.argv[1], sys.argv[2:]
parser, args = cli.parse_args(argv)
settings = ExecutorPluginRegistry().get_plugin("slurm").get_settings(args)
plugin = SimpleNamespace(_partitions=read_partition_file(settings.partition_config), _fallback_partition=None,
                         logger=logger)
calls = []
run_job = dryrun.Executor.run_job

def submit(self, job):
    if not job.is_norun:
        validate_slurm_extra(job)
        account = next(slurm.Executor.get_account_arg(plugin, job)) if job.resources.get("slurm_account") else ""
        params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": f"rule_{job.name}", "account": account,
                  "partition": slurm.Executor.get_partition_arg(plugin, job), "workdir": "."}
        call = get_submit_command(job, params, settings=settings) + set_gres_string(job)
        calls.append({"rule": job.name, "wildcards": dict(job.wildcards_dict), "call": call})
    run_job(self, job)

dryrun.Executor.run_job = submit
ok = cli.args_to_api(args, parser)
json.dump(calls, open(out, "w"))
sys.exit(0 if ok else 1)
"""


def sbatch_calls(root: Path, profile: str) -> dict[str, dict]:
    """The sbatch options the plugin builds for each job of ``profile``, by job name (``rule@arm``)."""
    out = root / "sbatch_calls.json"
    # --cores: a dry run caps threads at its cores (1 unless given); a cluster run caps them at nothing.
    argv = ["--workflow-profile", PROFILE, "--config", f"profile={profile}", "--dry-run", "--forceall"]
    argv += ["--cores", "4096"]
    proc = subprocess.run(
        [sys.executable, "-c", SBATCH_CALLS, str(out), *argv], cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    jobs = {}
    for entry in json.loads(out.read_text()):
        name = entry["rule"] + (f"@{entry['wildcards']['arm']}" if entry["wildcards"] else "")
        jobs[name] = options(entry["call"])
    return jobs


def options(call: str) -> dict[str, str]:
    """``sbatch --mem 8000 -p cpu --cpus-per-task=2 ...`` as {"--mem": "8000", "-p": "cpu", ...}."""
    words = shlex.split(call)
    assert words[0] == "sbatch"
    found, i = {}, 1
    while i < len(words):
        word = words[i]
        if "=" in word:
            key, value = word.split("=", 1)
            found[key] = value
        elif i + 1 < len(words) and not words[i + 1].startswith("-"):
            found[word], i = words[i + 1], i + 1
        else:
            found[word] = ""
        i += 1
    return found


def paper_job_shape(raw: dict, name: str) -> tuple[int | None, int]:
    """(GPUs, processes) a paper job should ask for, read from params.yaml's runtime settings: GPUs only where
    its device is cuda; a stage with a `gpus` setting runs one torchrun process per GPU."""
    settings = runtime_section(raw, name.split("@")[0], "paper")
    if settings.get("device") != "cuda":
        return None, 1
    gpus = int(settings.get("gpus") or 1)
    return gpus, gpus if "gpus" in settings else 1


def test_paper_jobs_ask_slurm_for_gpus_cores_memory_and_time_from_the_params(tmp_path):
    root = make_copy(tmp_path / "wf", "paper", git=False)
    submitting_env_profile(root)
    jobs = sbatch_calls(root, "paper")
    names = {name for name in STAGE_NAMES if name != "train_classifier"} | {f"train_classifier@{a}" for a in ARMS}
    assert set(jobs) == names
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert {name for name in names if paper_job_shape(raw, name)[0]} >= GPU_STAGES - {"train_classifier"}
    for name, job in jobs.items():
        gpus, processes = paper_job_shape(raw, name)
        assert job.get("--gpus") == (None if gpus is None else str(gpus)), (name, job)
        # The partition the plugin picked from partitions.yaml: GPU jobs where the GPUs are.
        assert job["-p"] == ("gpu" if gpus else "cpu"), (name, job)
        assert "--gres" not in job and "-A" not in job, (name, job)
        # CPU jobs get one task; GPU jobs leave the task geometry to SLURM (one task).
        assert ("--ntasks" in job) == (gpus is None), (name, job)
        assert int(job["-t"]) > 0 and int(job["--mem"]) > 0, (name, job)
        if gpus:
            # A core per process to drive its GPU, plus one per loader worker; memory held per process.
            workers = int(runtime_section(raw, name.split("@")[0], "paper").get("workers") or 0)
            assert int(job["--cpus-per-task"]) == max(2, processes * (1 + workers)), (name, job)
            assert int(job["--mem"]) % processes == 0, (name, job)
    # Parallel downloads are the download job's work: it asks for a core each.
    downloads = runtime_section(raw, "download", "paper")["mimic"]["workers"]
    assert jobs["download"]["--cpus-per-task"] == str(max(2, downloads))
    assert int(jobs["train_decoder"]["--gpus"]) > 1, "the paper profile trains the decoder on several GPUs"


def test_smoke_jobs_ask_for_no_gpu_and_go_to_the_cpu_partition(tmp_path):
    """`device: auto` (every profile but paper) never asks a scheduler for a GPU."""
    root = make_copy(tmp_path / "wf", "smoke", git=False)
    submitting_env_profile(root)
    jobs = sbatch_calls(root, "smoke")
    for name, job in jobs.items():
        assert "--gpus" not in job and job["-p"] == "cpu", (name, job)
    # The CPU-tuned thread counts stay: every classifier arm trains on one core, beside another job.
    cores = {name: int(job["--cpus-per-task"]) for name, job in jobs.items() if name.startswith("train_classifier")}
    assert cores == {f"train_classifier@{arm}": 1 for arm in ARMS}


def test_the_profile_names_no_resource_the_plugin_refuses():
    """The plugin manages --gpus, --gres, --mem, -p ... itself and refuses them in slurm_extra."""
    profile = yaml.safe_load((REPO / PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert "slurm_extra" not in json.dumps(profile)
    assert (REPO / PROFILE / profile["slurm-partition-config"]).is_file()
