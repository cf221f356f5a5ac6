# Shared helpers for the rules. They import only raygen's standard-library modules (stages, code_deps,
# config, run_lock, handover), so Snakemake itself runs in any environment; jobs (conda ones too) import
# raygen from this checkout through PYTHONPATH.
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
from raygen.config import PROFILES, scientific_section  # noqa: E402
from raygen.stages import BY_NAME  # noqa: E402

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


refuse_overrides()
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

# One id per invocation, shared by every job (cluster jobs inherit the environment of the submitting
# process, where it is set once); MLflow groups the runs by it. The hand-over folder collects the jobs'
# start and finish records.
RUN_ID = os.environ.setdefault("RAYGEN_PIPELINE_RUN", uuid.uuid4().hex[:12])
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


def finish_run():
    """onsuccess / onerror: record in dvc.lock what this run truly built, then free the checkout."""
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


def classifier_synthetic(wildcards):
    """The augmented arms read the 100% manifest and its images; the real arm reads neither."""
    if wildcards.arm == "real":
        return {}
    return {"synthetic": "results/synthesize/aug_100.csv", "synthetic_images": "results/synthesize/images"}
