# Shared helpers for the rules. Kept free of `raygen` imports so that Snakemake itself can run in
# an environment without the package (conda jobs get it through PYTHONPATH, set below).
import os
import re
import uuid

PROFILES = ("demo", "smoke", "paper")
PROFILE = config.get("profile", "demo")
if PROFILE not in PROFILES:
    raise ValueError(f"profile: unknown profile {PROFILE!r}; choose one of {', '.join(PROFILES)}")

# The one command prefix of every stage; DVC stages use the same string.
PARAMS = "params.yaml"
DATA = f"data/{PROFILE}"
JPG_ROOT = f"{DATA}/mimic-cxr-jpg/2.0.0"
REPORTS_ROOT = f"{DATA}/mimic-cxr/2.0.0"
ARMS = ("real", "real+50", "real+100")  # classifier arms: raygen.data.classifier_data.ARMS
# torchxrayvision's DenseNet-121 (the paper's FID features), used by `evaluate` when present.
XRV_WEIGHTS = "weights/torchxrayvision/chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
CHEXNET_WEIGHTS = "weights/chexnet/model.pth.tar"  # the paper's classifier init (train_classifier.init: chexnet)
CONDA_ENV = "../envs/raygen.yaml"

# Jobs (conda ones too) import raygen from this checkout, and MLflow groups the runs of one
# invocation under one id. A prefix of every shell command, so nothing here reads the environment.
shell.prefix(
    f"export PYTHONPATH={workflow.basedir}:$PYTHONPATH RAYGEN_ROOT={workflow.basedir}"
    f" RAYGEN_PIPELINE_RUN=${{{{RAYGEN_PIPELINE_RUN:-{uuid.uuid4().hex[:12]}}}}}; "
)


def _merge(base, overlay):
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def section(name):
    """The stage's resolved params section (base values + the active profile's overlay).

    Handed to each rule as `params.section`, so a change in one section reruns only that rule and
    the rules downstream of it (--rerun-triggers params).
    """
    overlay = (config.get("profiles", {}).get(PROFILE) or {}).get(name) or {}
    return _merge(config.get(name) or {}, overlay)


def stage_cmd(stage, args, log=None):
    """`python -m raygen.<stage>` with the shared flags, then the stage's own arguments.

    The log is logs/<stage>.log, or `log` (a path under logs/<stage>/) for a stage that runs per wildcard.
    """
    return f"python -m raygen.{stage} --params {PARAMS} --profile {PROFILE} --log {log or f'logs/{stage}.log'} {args}"


def dvc_handover():
    """Record the outputs Snakemake just made in dvc.lock (`dvc commit`), when that is truthful.

    Skipped when DVC is absent or uninitialised, or when the profile came from `--config` and differs
    from params.yaml's (dvc.lock would then pair the file's params with another profile's outputs).
    Set RAYGEN_DVC_HANDOVER=0 to skip it.
    """
    import shutil
    import subprocess

    import yaml

    with open(PARAMS) as f:
        file_profile = (yaml.safe_load(f) or {}).get("profile", "demo")
    if os.environ.get("RAYGEN_DVC_HANDOVER", "1") == "0" or not os.path.isdir(".dvc") or not shutil.which("dvc"):
        return
    if file_profile != PROFILE:
        logger.warning(f"DVC hand-over skipped: profile {PROFILE!r} came from --config, params.yaml says {file_profile!r}")
        return
    # `dvc commit` moves outputs into its cache and links or copies them back, which gives them new
    # mtimes; Snakemake would then see stale downstream outputs. Put the mtimes back afterwards.
    mtimes = {}
    for top in ("results", DATA):
        for folder, _, files in os.walk(top):
            for name in files:
                path = os.path.join(folder, name)
                mtimes[path] = os.stat(path, follow_symlinks=False).st_mtime_ns
    # --no-relink: with DVC's default copy cache, relinking would copy every output back out of the cache.
    proc = subprocess.run(["dvc", "commit", "--force", "--quiet", "--no-relink"], capture_output=True, text=True)
    for path, mtime in mtimes.items():
        if os.path.lexists(path):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    if proc.returncode == 0:
        logger.info("DVC hand-over: outputs committed to dvc.lock (`dvc repro` has nothing to redo)")
    else:
        logger.warning(f"DVC hand-over failed (run `dvc commit` by hand): {proc.stderr.strip()[-500:]}")


def classifier_synthetic(wildcards):
    """The augmented arms read the 100% manifest and its images; the real arm reads neither."""
    if wildcards.arm == "real":
        return {}
    return {"synthetic": "results/synthesize/aug_100.csv", "synthetic_images": "results/synthesize/images"}
