# Shared helpers for the rules. They import only raygen modules that need nothing but the standard library and
# PyYAML (stages, code_deps, config, check_params, run_lock, handover, tracking_hooks), so Snakemake itself runs
# in any environment; jobs (conda ones too) import raygen from this checkout through PYTHONPATH.
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

REPO = Path(workflow.basedir).parent.resolve()
sys.path.insert(0, str(REPO))

from raygen.pipeline import handover, run_lock  # noqa: E402
from raygen.pipeline.code_deps import stage_code_deps  # noqa: E402
from raygen.config import PROFILES, ConfigError, runtime_section, scientific_section  # noqa: E402
from raygen.pipeline.check_params import check_params  # noqa: E402
from raygen.stages import BY_NAME  # noqa: E402
from raygen.pipeline import tracking_hooks  # noqa: E402  (MLflow itself runs in a helper process)

PARAMS = "params.yaml"


def _differences(base, other, prefix=""):
    """Dotted keys whose values differ between two params mappings."""
    keys = set(base) | set(other) if isinstance(base, dict) and isinstance(other, dict) else None
    if keys is None:
        return [] if base == other else [prefix]
    found = []
    for key in sorted(keys, key=str):
        found += _differences(base.get(key), other.get(key), f"{prefix}.{key}" if prefix else str(key))
    return found


def refuse_overrides():
    """`--config key=value` (or --configfile) would change what Snakemake tracks but not what the stage
    reads (params.yaml); only the profile switch travels to the stages (as --profile), so only it may
    come from the command line."""
    with open(PARAMS) as f:
        on_disk = yaml.safe_load(f) or {}
    changed = [key for key in _differences(on_disk, config) if key != "profile"]
    if changed:
        raise ValueError(
            f"--config/--configfile may only set `profile`; refusing {', '.join(changed)}. Stages read "
            f"{PARAMS}: edit it, or run a variant with `dvc exp run -S {changed[0]}=<value>`."
        )


def refuse_bad_params():
    """`raygen check-params` before any job: every section of every profile, so a typo fails the run in its
    first second, not hours later in the stage that reads it."""
    try:
        check_params(PARAMS)
    except ConfigError as err:
        raise WorkflowError(f"{PARAMS}: {err}") from None


refuse_overrides()
refuse_bad_params()
PROFILE = config.get("profile", "demo")
if PROFILE not in PROFILES:
    raise ValueError(f"profile: unknown profile {PROFILE!r}; choose one of {', '.join(PROFILES)}")

DATA = f"data/{PROFILE}"
DOWNLOADED = f"{DATA}/download-complete.json"
JPG_ROOT = f"{DATA}/mimic-cxr-jpg/2.0.0"
REPORTS_ROOT = f"{DATA}/mimic-cxr/2.0.0"
ARMS = BY_NAME["train_classifier"].instances  # the classifier arms, one job each
INPUTS = config["inputs"]  # folders of the pretrained parts (params.yaml `inputs`)
# Release file names inside those folders, exactly as their authors publish them.
CHEXNET_FILE = f"{INPUTS['chexnet']}/model.pth.tar"
XRV_FILE = f"{INPUTS['torchxrayvision']}/chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
CONDA_ENV = "../envs/raygen.yaml"

# One id per invocation, drawn here once and shared by every job: local jobs inherit this process's
# environment, and the SLURM plugin submits each job with `sbatch --export=ALL`, so the Snakemake a cluster
# job runs re-parses this file with the id already set and keeps it. MLflow nests the invocation's stage
# runs under one parent run tagged with it. The hand-over folder collects the jobs' start and finish records.
RUN_ID = os.environ.setdefault("RAYGEN_PIPELINE_RUN", uuid.uuid4().hex[:12])
PIPELINE_RUN = None  # the MLflow parent run, opened by start_run() (onstart)
HANDOVER_DIR = os.environ.setdefault(handover.DIR_ENV, str(Path(".raygen/handover", RUN_ID).resolve()))

shell.prefix(f"export PYTHONPATH={REPO}:$PYTHONPATH RAYGEN_ROOT={REPO}; ")


def section(name):
    """The stage's result-shaping params (base section + the active profile's overlay; no runtime
    settings). Handed to each rule as `params.section`, so a change reruns that rule and what follows."""
    return scientific_section(config, name, PROFILE)


def code(name):
    """The stage's source files (its import closure in raygen/): an edit reruns the stage."""
    return stage_code_deps(name, REPO)


def weights(*keys):
    """Every file in the named `inputs` folders except their READMEs (DVC ignores those too): new or
    changed weights rerun the stage. A stage that needs a missing file says which and where to get it."""
    files = []
    for key in keys:
        for folder, _, names in os.walk(INPUTS[key]):
            files += [os.path.join(folder, n) for n in sorted(names) if n != "README.md"]
    return sorted(files)


def stage_cmd(stage, args, log=None):
    """`python -m raygen <stage>` with the shared flags, then the stage's own arguments; DVC runs the
    same string. The log is logs/<stage>.log, or `log` for a stage that runs per wildcard."""
    return f"python -m raygen {stage} --params {PARAMS} --profile {PROFILE} --log {log or f'logs/{stage}.log'} {args}"


def start_run():
    """onstart: hold the checkout for this run, or stop naming whoever holds it."""
    try:
        run_lock.start_snakemake_run(Path.cwd(), RUN_ID)
    except run_lock.CheckoutBusy as err:
        raise WorkflowError(str(err)) from None  # before any job starts; Snakemake releases its own locks
    # Records left by a killed run that had the same RAYGEN_PIPELINE_RUN are not this run's.
    shutil.rmtree(HANDOVER_DIR, ignore_errors=True)
    # A new MLflow parent run for this call, whose helper holds the store's lock before the first job starts:
    # jobs starting together never race to create a fresh SQLite store, and find this parent. A --touch run
    # runs no stage: no parent run for it.
    global PIPELINE_RUN
    if not workflow.touch:
        PIPELINE_RUN = tracking_hooks.start_pipeline(PROFILE, PARAMS)


def finish_run(status="FINISHED"):
    """onsuccess / onerror (status FAILED): record in dvc.lock what this run truly built, free the
    checkout, then end the MLflow parent run (last: waiting for MLflow must not keep the checkout held)."""
    try:
        run_lock.release_dvc_lock(Path.cwd())
        try:
            result = handover.handover(Path.cwd(), Path(HANDOVER_DIR), [DATA])
        finally:
            run_lock.release(Path.cwd())
            shutil.rmtree(HANDOVER_DIR, ignore_errors=True)
        for item in result.skipped:
            logger.warning(f"DVC hand-over: not recorded: {item}")
        if result.error:
            logger.warning(f"DVC hand-over failed: {result.error}")
        elif result.committed:
            logger.info(f"DVC hand-over: recorded {', '.join(result.committed)} in dvc.lock")
    finally:
        tracking_hooks.end_pipeline(PIPELINE_RUN, status)


def classifier_synthetic(wildcards):
    """The augmented arms read the 100% manifest and its images; the real arm reads neither."""
    if wildcards.arm == "real":
        return {}
    return {"synthetic": "results/synthesize/aug_100.csv", "synthetic_images": "results/synthesize/images"}


# What each job asks of the scheduler: Snakemake's own (--cores, --resources) on one machine and the SLURM
# executor plugin on a cluster (threads -> --cpus-per-task, mem_mb -> --mem, runtime -> -t, gpu -> --gpus,
# and the partition that fits, from workflow/profiles/slurm/partitions.yaml). Derived from params.yaml's
# runtime settings, so a job asks for what the stage will really start: its processes, loader workers and GPUs.
# Column of the (paper, laptop-sized) pairs below: every profile but paper is sized for a 2-core laptop.
SCALE = 0 if PROFILE == "paper" else 1
# Host memory (MB) of one process at the profile's scale; each loader worker adds its share on top
# (LOADER_MB), and a job with one process per GPU holds that much per process. The laptop column is about
# twice the largest peak a demo stage reached (docs/benchmarks.md), so a job fits an 8 GB machine.
MEM_MB = {
    "download": (4000, 4000),
    "sections": (8000, 4000),
    "cohort": (8000, 4000),
    "vqgan": (8000, 4000),
    "tokenize": (8000, 4000),
    "embed_text": (8000, 4000),
    "train_decoder": (12000, 4000),
    "synthesize": (8000, 4000),
    "train_classifier": (24000, 4000),  # paper: every training image decoded once and kept in RAM (fp16, 512 px)
    "evaluate": (24000, 4000),
    "tables": (1000, 1000),
}
LOADER_MB = (1000, 500)[SCALE]
# Wall-time limits (minutes), generous upper bounds: a job that passes its limit is killed.
RUNTIME_MIN = {
    "download": (2880, 60),  # MIMIC-CXR-JPG: ~57 GB for p10, ~570 GB for all groups
    "sections": (120, 30),
    "cohort": (60, 30),
    "vqgan": (720, 120),
    "tokenize": (240, 60),
    "embed_text": (60, 30),
    "train_decoder": (1440, 120),
    "synthesize": (240, 60),
    "train_classifier": (480, 120),
    "evaluate": (120, 60),
    "tables": (30, 15),
}
# Stages whose `workers` are processes beside the main one (DataLoader workers, a process pool), each holding
# memory of its own; evaluate's `workers` are threads of its one process.
LOADER_STAGES = ("sections", "vqgan", "tokenize", "train_decoder", "train_classifier")


def runtime_setting(stage, key, default=None):
    """A `runtime.<stage>` value with the active profile's overlay (settings that change no result)."""
    return runtime_section(config, stage, PROFILE).get(key, default)


def uses_cuda(stage):
    """Whether the stage's job needs GPUs: its `device` names CUDA. `auto` (CUDA when present) asks for none,
    since a scheduler hands out GPUs only on request; a profile meant for GPUs says `cuda` (paper does)."""
    device = str(runtime_setting(stage, "device", "cpu"))
    return device == "cuda" or device.startswith("cuda:")


def gpus(stage):
    """GPUs the stage's job asks for: none off CUDA; else its `gpus` setting (train_decoder and synthesize
    start one torchrun process per GPU) or 1. `gpus: 0` means every visible GPU, which a scheduler cannot be
    asked for, so the job asks for 1 and the stage then sees 1."""
    if not uses_cuda(stage):
        return 0
    return max(1, int(runtime_setting(stage, "gpus", 1)))


def processes(stage):
    """Processes the stage runs at once: one per GPU for the torchrun stages, else one."""
    return max(1, gpus(stage)) if runtime_setting(stage, "gpus") is not None else 1


def workers(stage):
    """The stage's worker count: download's parallel downloads or demo renderers, else `workers` (0 for none,
    or for sections "one per CPU", which asks for nothing extra: set a number for a cluster)."""
    if stage == "download":
        if section("download")["source"] == "demo":
            return int(runtime_setting("download", "demo_workers", 1))
        return int(runtime_setting("download", "mimic", {}).get("workers", 1))
    return int(runtime_setting(stage, "workers", 0) or 0)


def threads_for(stage, cpu=2):
    """CPU cores for the job. On GPUs: a core per process to drive its GPU plus one per loader worker (at
    least 2). On the CPU: the stage's `cpu_threads` runtime setting, which the stage itself applies, so
    that `dvc repro` computes with the same threads; else `cpu` compute threads (tuned for a 2-core
    laptop; Snakemake caps threads at --cores), or the stage's workers when they are the work (download,
    sections)."""
    if gpus(stage):
        return max(2, processes(stage) * (1 + workers(stage)))
    if stage in ("download", "sections"):
        return max(cpu, workers(stage))
    return int(runtime_setting(stage, "cpu_threads", 0) or cpu)


def mem_mb(stage):
    """Host memory (MB) for the job: per process, the stage's own plus each loader worker's share."""
    own = MEM_MB[stage][SCALE]
    loaders = workers(stage) if stage in LOADER_STAGES else 0
    return processes(stage) * (own + LOADER_MB * loaders)


def runtime_min(stage):
    """The job's wall-time limit in minutes (SLURM's -t)."""
    return RUNTIME_MIN[stage][SCALE]
