"""What every trainer needs around its loop: resumable checkpoints, RNG capture and restore, the
warm-up + cosine learning-rate schedule and AdamW with weight decay on matrices only.

A checkpoint's ``config`` records the settings a run was started with. A killed run started again
resumes from its checkpoint only when the essential part of that config is unchanged; the
"resume-free" params keys (workers, devices, logging intervals ...) may differ, because they change
no result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from raygen.checkpoint import load_checkpoint
from raygen.runtime import Dist, gather_object

log = logging.getLogger(__name__)

ADAMW_BETAS = (0.9, 0.999)  # torch's default


# ---------------------------------------------------------------------------------------------
# Resumable checkpoints
# ---------------------------------------------------------------------------------------------


def without_keys(mapping: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``mapping`` minus ``keys`` (insertion order kept)."""
    keys = set(keys)
    return {k: v for k, v in mapping.items() if k not in keys}


def essential_config(config: dict[str, Any], resume_free: Iterable[str], unchecked: Iterable[str] = ()) -> dict:
    """The part of a run's ``config`` that must match for a resume: the top-level keys except
    ``unchecked``, and ``config["params"]`` except the ``resume_free`` keys."""
    return {**without_keys(config, unchecked), "params": without_keys(config.get("params", {}), resume_free)}


def resumable(
    path: Path,
    config: dict[str, Any],
    essential: Callable[[dict[str, Any]], Any],
    stale_warning: str,
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when ``essential`` of its ``config`` equals ``essential(config)``, else
    None (``stale_warning`` % path is logged when a checkpoint exists but does not match)."""
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    if essential(state.get("config", {})) != essential(config):
        log.warning(stale_warning, path)
        return None
    return state


# ---------------------------------------------------------------------------------------------
# RNG states
# ---------------------------------------------------------------------------------------------


def rng_state(generator: torch.Generator, ctx: Dist) -> dict[str, list[torch.Tensor]]:
    """Every rank's torch RNG states as tensors (weights_only-loadable); a collective call."""
    local = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if ctx.device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(ctx.device)
    gathered = gather_object(local, ctx)
    return {key: [g[key] for g in gathered] for key in local}


def restore_rng(state: dict[str, list[torch.Tensor]], generator: torch.Generator, ctx: Dist) -> None:
    """Put back this rank's states from :func:`rng_state`; a different world size keeps the fresh seeds."""
    if len(state["torch"]) != ctx.world_size:
        log.warning(
            "checkpoint has RNG states for %d processes, this run has %d: reseeding",
            len(state["torch"]),
            ctx.world_size,
        )
        return
    torch.set_rng_state(state["torch"][ctx.rank])
    generator.set_state(state["generator"][ctx.rank])
    if "cuda" in state and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"][ctx.rank], ctx.device)


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """The learning-rate factor at ``step``: linear warm-up over ``warmup`` steps to 1, then cosine
    decay to ``floor`` at ``total`` steps (and ``floor`` after it)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step :func:`warmup_cosine` schedule.

    The factor is a plain function (a lambda), so the scheduler's state dict stores no callable state
    (``lr_lambdas: [None]``), as checkpoints written before expect.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, floor))


def adamw(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    device: torch.device,
    betas: tuple[float, float] = ADAMW_BETAS,
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices, convolutions and embeddings only, not on norms and biases
    (nanoGPT's split); fused kernels on CUDA."""
    params = [t for t in model.parameters() if t.requires_grad]
    groups = [
        {"params": [t for t in params if t.dim() >= 2], "weight_decay": weight_decay},
        {"params": [t for t in params if t.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")
