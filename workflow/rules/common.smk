# Shared helpers for the rules. Kept free of `raygen` imports so that Snakemake itself can run in
# an environment without the package (conda jobs get it through PYTHONPATH, set below).
import os
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


def stage_cmd(stage, args):
    """`python -m raygen.<stage>` with the shared flags, then the stage's own arguments."""
    return f"python -m raygen.{stage} --params {PARAMS} --profile {PROFILE} --log logs/{stage}.log {args}"
