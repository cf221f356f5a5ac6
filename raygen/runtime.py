"""The one place that owns logging set-up, devices, precision, TF32 and seeding.

Library code only calls ``logging.getLogger(__name__)``; a stage's ``main`` calls
:func:`setup_logging` once. Nothing else touches ``torch.backends``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygen.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, append to ``log_file`` (the stage's ``logs/<stage>.log``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    # Third-party chatter would bury the stage's own progress lines.
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "git", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch globals for library code we do not control; return a Generator.

    Our own code draws randomness only from explicit generators (``numpy.random.Generator`` or
    ``torch.Generator``); the global seeds make third-party code repeatable too.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # stages that do not need torch still seed the rest
        pass
    return np.random.default_rng(seed)


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
# NVIDIA's oldest Linux driver that runs any toolkit of a CUDA major (minor-version compatibility; README,
# "GPU driver and CUDA build", links NVIDIA's table): the pinned torch's CUDA build needs at least this one.
MIN_DRIVER_FOR_CUDA = {11: 450, 12: 525, 13: 580}


def pick_device(requested: str = "auto") -> torch.device:  # noqa: F821
    """``auto`` picks CUDA when present, else CPU; an explicit device that is absent is an error.

    ``auto`` falling back to the CPU on a machine with an NVIDIA driver is logged as a warning that names
    the cause (:func:`gpu_unused_reason`): a run meant for a GPU would otherwise train on the CPU for days
    unnoticed. The device used goes to the stage's log either way.
    """
    import torch

    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cpu" and (reason := gpu_unused_reason()):
            log.warning(
                "device auto: %s; running on the CPU. Set `device: cpu` to accept that, `device: cuda` to make it "
                "an error; README, 'GPU driver and CUDA build', says how to get the GPU used",
                reason,
            )
    else:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            why = gpu_unused_reason() or "no NVIDIA driver found, or CUDA_VISIBLE_DEVICES hides every GPU"
            raise RuntimeError(
                f"device {requested!r} was asked for but CUDA is not available ({why}); use 'auto' or 'cpu'"
            )
    log.info(
        "device: %s (asked for %r; torch %s, CUDA build %s)", device, requested, torch.__version__, torch.version.cuda
    )
    return device


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA driver's version ("580.65.06"), "unknown" when a driver is there but its version
    cannot be read, None when this machine shows no NVIDIA driver at all (no GPU to miss)."""
    try:
        text = NVIDIA_DRIVER_FILE.read_text()
    except OSError:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None
        try:
            query = [smi, "--query-gpu=driver_version", "--format=csv,noheader"]
            done = subprocess.run(query, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        if done.returncode != 0:
            return None  # nvidia-smi installed but no driver loaded ("NVIDIA-SMI has failed"): no GPU to miss
        text = done.stdout
    # Driver versions have a major of three digits or more; the file's GCC line ("12.2.0") does not.
    found = re.search(r"(?<![\w.])(\d{3,}\.\d+(?:\.\d+)?)(?![\w.])", text)
    return found.group(1) if found else "unknown"


def gpu_unused_reason() -> str | None:
    """Why torch sees no CUDA device although an NVIDIA driver is loaded; None when there is nothing to
    explain (no NVIDIA driver, or the GPUs hidden on purpose with an empty ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1") or _slurm_job_without_gpus():
        return None
    driver = nvidia_driver_version()
    if driver is None:
        return None
    built = torch.version.cuda
    if built is None:
        return f"an NVIDIA driver ({driver}) is loaded but torch {torch.__version__} is a CPU-only build"
    need = MIN_DRIVER_FOR_CUDA.get(int(built.split(".")[0]))
    found = int(driver.split(".")[0]) if driver[0].isdigit() else None
    if need is not None and found is not None and found < need:
        return (
            f"an NVIDIA GPU is present but its driver {driver} is too old for torch {torch.__version__}, "
            f"built for CUDA {built}, which needs driver >= {need}: update the driver, or install a torch build "
            "for an older CUDA (that leaves the tested configuration)"
        )
    return (
        f"an NVIDIA driver ({driver}) is loaded but torch {torch.__version__} (CUDA {built}"
        + (f", needs driver >= {need}" if need else "")
        + ") sees no usable GPU: check `nvidia-smi`, CUDA_VISIBLE_DEVICES and the job's or container's GPU access"
    )


def configure_torch(device: torch.device, cpu_threads: int = 0) -> None:  # noqa: F821
    """TF32 matmuls on Ampere+ GPUs (free speed, ~1e-3 relative error); CPU thread count.

    ``cpu_threads`` (a stage's ``runtime.<stage>.cpu_threads``) fixes the thread count of a stage that
    runs on the CPU, whoever launches it: Snakemake and ``dvc repro`` then sum floats in the same order
    and give the same bits. 0 leaves it to ``RAYGEN_THREADS``, else to the launcher (Snakemake sets
    OMP_NUM_THREADS to the job's threads; ``dvc repro`` sets nothing: every core).
    """
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    threads = cpu_threads if device.type == "cpu" else 0
    threads = threads or int(os.environ.get("RAYGEN_THREADS") or 0)
    if threads:
        torch.set_num_threads(threads)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:  # noqa: F821
    """The autocast dtype for ``precision`` in {auto, fp32, bf16, fp16}; None means full fp32.

    ``auto`` is bf16 on CUDA (no loss scaling needed, same exponent range as fp32) and fp32 on the
    CPU, where bf16 autocast is slower than fp32 on most chips.
    """
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision in ("auto", "bf16"):
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")


def autocast(device: torch.device, dtype: torch.dtype | None):  # noqa: F821
    """Mixed precision at ``dtype`` on ``device``, or a no-op context when ``dtype`` is None (fp32)."""
    import contextlib

    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# One process per GPU (torchrun)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place in the (possibly single-process) job."""

    rank: int
    world_size: int
    device: torch.device  # noqa: F821

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(requested_device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(requested_device)
    if world == 1:
        return Dist(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


def _slurm_job_without_gpus() -> bool:
    """A SLURM job that was given no GPU: one that lands on a GPU node sees the driver but, confined to its
    allocation, no device, which is what it asked for."""
    gpu_vars = ("SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_STEP_GPUS")
    return "SLURM_JOB_ID" in os.environ and not any(os.environ.get(v) for v in gpu_vars)


def processes_per_node(gpus: int, device: str) -> int:
    """How many processes a stage should run: ``gpus`` > 0 as given, 0 = every visible GPU; 1 on the
    CPU (``device: auto`` without a GPU too: several CPU processes would only share the same cores) or
    inside a job torchrun already started."""
    if "WORLD_SIZE" in os.environ or device == "cpu":
        return 1
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > visible and visible:
        raise UsageError(
            f"gpus: {gpus} GPUs asked for but {visible} visible (CUDA_VISIBLE_DEVICES); set the stage's `gpus` "
            f"in params.yaml to {visible} or 0 (every visible GPU)"
        )
    return (gpus or visible) if visible else 1


def torchrun_command(module: str, argv: list[str], nproc: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m <module> <argv>``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *argv,
    ]


def relaunch_per_gpu(module: str, argv: list[str], gpus: int, device: str) -> int | None:
    """Re-run this stage's own command under torchrun, one process per GPU, when more than one is to
    be used and this process is not already part of a torchrun job; return its exit code. None means
    "go on in this process". The Snakemake rule and DVC stage keep one command for one or many GPUs.
    """
    nproc = processes_per_node(gpus, device)
    if nproc <= 1:
        return None
    cmd = torchrun_command(module, argv, nproc)
    log.info("%d GPUs: relaunching as %s", nproc, " ".join(cmd[:6]) + " ...")
    return subprocess.call(cmd, env=_threads_per_rank(os.environ, nproc))


def _threads_per_rank(env: Mapping[str, str], nproc: int) -> dict[str, str]:
    """The job's environment with its OMP_NUM_THREADS (Snakemake sets it to the job's cores) split among the
    ``nproc`` processes: torchrun keeps a value that is already set, so each rank would otherwise run the whole
    job's thread count on a share of its cores."""
    env = dict(env)
    if env.get("OMP_NUM_THREADS", "").isdigit():
        env["OMP_NUM_THREADS"] = str(max(1, int(env["OMP_NUM_THREADS"]) // nproc))
    return env


def setup_rank_logging(log_file: str | Path | None) -> None:
    """:func:`setup_logging` for a stage that may run as several torchrun processes: rank 0 logs to the
    stage's file at INFO, the other ranks only warnings, to stderr."""
    main_rank = int(os.environ.get("RANK", "0")) == 0
    setup_logging(log_file if main_rank else None, level=logging.INFO if main_rank else logging.WARNING)


def run_per_gpu(module: str, argv: list[str] | None, gpus: int, device: str, body: Callable[[Dist], int]) -> int:
    """Run ``body(ctx)`` in every process of the job: relaunched under torchrun when more than one GPU is
    to be used (:func:`relaunch_per_gpu`), then joined to the process group, which is left at the end."""
    code = relaunch_per_gpu(module, list(sys.argv[1:] if argv is None else argv), gpus, device)
    if code is not None:
        return code
    ctx = init_distributed(device)
    try:
        return body(ctx)
    finally:
        if ctx.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def gather_object(obj: Any, ctx: Dist) -> list[Any]:
    """``obj`` of every rank, in rank order (just ``[obj]`` in a single process)."""
    if ctx.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Dist) -> None:
    """Wait for every rank (nothing in a single process)."""
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
