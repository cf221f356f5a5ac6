"""One parallel decoding step of masked-token generation, without a network.

Given the network's logits for every position and the current canvas, :func:`decode_step`

1. filters the logits, keeping the top ``1 - alpha`` share of the codebook per position (the
   paper's alpha = 0.5 filter, lucidrains' ``top_k(thres=alpha)``); the filter shapes sampling only,
2. samples a token for every still-masked position at the step's temperature with Gumbel-max,
3. scores each new token's confidence and keeps the schedule's number of least-confident new tokens
   masked, fixing the rest.

Two loops differ in steps 2-3 (``schedule``, see :mod:`raygen.generation.schedule`):

- ``maskgit`` (MaskGIT-style, the default): temperature ``T (1 - k / K)`` (T down to T/K),
  confidence = log-probability under the *filtered* logits, plus optional annealed Gumbel noise
  (MaskGIT's choice temperature), at least one new token fixed per step.
- ``raygen_paper`` (the RayGen authors' ``generate``): temperature ``T (K - 1 - k) / K``, so the
  last step is greedy; confidence ranks by ``1 - p`` with ``p`` the new token's probability under the
  *unfiltered, untempered* softmax; no confidence noise. A step may fix no token when two
  consecutive counts are equal (small grids, many steps), as in the original.

In both, tokens fixed in an earlier step keep their id and are never re-masked; after the last step
no position is masked. Randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from raygen.generation.schedule import SCHEDULES, remask_count


@dataclass(frozen=True)
class StepOutput:
    """The canvas after one decode step.

    ids:         (B, N) int64, codebook ids where fixed, ``mask_id`` where still masked.
    masked:      (B, N) bool, True = still masked after this step.
    sampled_ids: (B, N) int64, this step's prediction for every position (fixed ones unchanged).
    """

    ids: torch.Tensor
    masked: torch.Tensor
    sampled_ids: torch.Tensor


def filter_top_share(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """Keep the ``ceil((1 - alpha) * V)`` largest logits per position, set the rest to -inf.

    logits: (..., V) float. ``alpha`` in [0, 1): 0 keeps everything, 0.5 keeps the top half.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    vocab = logits.shape[-1]
    keep = max(1, math.ceil((1.0 - alpha) * vocab))
    if keep >= vocab:
        return logits
    kth = logits.topk(keep, dim=-1).values[..., -1:]  # (..., 1) smallest kept value
    return logits.masked_fill(logits < kth, float("-inf"))


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)), float32, drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return -torch.log((-torch.log(u.clamp_(min=1e-20))).clamp_(min=1e-20))


def step_temperature(temperature: float, step: int, total_steps: int, anneal: bool, schedule: str = "maskgit") -> float:
    """Sampling temperature at ``step``: constant, or annealed linearly.

    ``maskgit``: T (1 - k / K), from T down to T/K. ``raygen_paper``: T (K - 1 - k) / K, from
    T (K - 1) / K down to 0 (greedy) at the last step.
    """
    if not anneal:
        return temperature
    if schedule == "raygen_paper":
        return temperature * (total_steps - 1 - step) / total_steps
    return temperature * (1.0 - step / total_steps)


def _sample(
    logits: torch.Tensor, ids: torch.Tensor, unknown: torch.Tensor, temp: float, generator: torch.Generator
) -> torch.Tensor:
    """(B, N) draws from softmax(logits / temp) at unknown positions (argmax when temp <= 0); ids elsewhere."""
    if temp > 0:
        noisy = logits / temp + gumbel_noise(logits.shape, generator, logits.device)
        sampled = noisy.argmax(dim=-1)  # (B, N) Gumbel-max = a draw from softmax(logits / T)
    else:
        sampled = logits.argmax(dim=-1)
    return torch.where(unknown, sampled, ids)


def _maskgit_confidence(
    filtered: torch.Tensor,
    sampled: torch.Tensor,
    step: int,
    total_steps: int,
    gumbel_scale: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B, N) log-probability of each sampled token under the filtered logits, plus annealed Gumbel noise."""
    log_probs = filtered.log_softmax(dim=-1).gather(-1, sampled[..., None]).squeeze(-1)  # (B, N)
    if gumbel_scale > 0:
        scale = gumbel_scale * (1.0 - (step + 1) / total_steps)
        log_probs = log_probs + scale * gumbel_noise(log_probs.shape, generator, filtered.device)
    return log_probs


def _paper_confidence(raw: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """(B, N) minus the authors' score ``1 - p``, p = the sampled token's unfiltered, untempered probability.

    The score is negated rather than replaced by ``p`` so float32 ties (p near 0 gives 1 - p == 1) fall
    exactly where the original's do.
    """
    p = raw.softmax(dim=-1).gather(-1, sampled[..., None]).squeeze(-1)  # (B, N)
    return -(1.0 - p)


def decode_step(
    logits: torch.Tensor,
    ids: torch.Tensor,
    step: int,
    total_steps: int,
    mask_id: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    temperature_anneal: bool = True,
    alpha: float = 0.0,
    gumbel_scale: float = 0.0,
    schedule: str = "maskgit",
) -> StepOutput:
    """Sample masked positions from ``logits`` and re-mask the least confident on the schedule.

    logits: (B, N, V) float, V = codebook size (the mask id is not a choice).
    ids:    (B, N) int64, ``mask_id`` at masked positions.
    step:   0-based index of this step among ``total_steps``.
    temperature <= 0 means greedy (argmax). ``gumbel_scale`` multiplies Gumbel noise on the
    confidence, annealed by ``1 - (step + 1) / total_steps`` (MaskGIT's choice_temperature); the
    ``raygen_paper`` loop has none, so it must be 0 there. Ties in confidence go to the lower position.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if schedule == "raygen_paper" and gumbel_scale > 0:
        raise ValueError("the raygen_paper loop has no confidence noise: gumbel_scale must be 0")
    num_tokens = logits.shape[1]
    unknown = ids == mask_id  # (B, N)
    raw = logits.float()
    filtered = filter_top_share(raw, alpha)  # (B, N, V)
    temp = step_temperature(temperature, step, total_steps, temperature_anneal, schedule)
    sampled = _sample(filtered, ids, unknown, temp, generator)

    n_unknown = unknown.sum(dim=1)  # (B,)
    target = torch.full_like(n_unknown, remask_count(schedule, step, total_steps, num_tokens))
    if schedule == "maskgit":
        confidence = _maskgit_confidence(filtered, sampled, step, total_steps, gumbel_scale, generator)
        keep_masked = torch.minimum(target, (n_unknown - 1).clamp(min=0))  # fix >= 1 new token per step
    else:
        confidence = _paper_confidence(raw, sampled)
        keep_masked = torch.minimum(target, n_unknown)
    # Fixed tokens get +inf so they are never chosen for re-masking.
    confidence = torch.where(unknown, confidence, torch.full_like(confidence, float("inf")))
    ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1)  # (B, N), 0 = least confident
    masked = ranks < keep_masked[:, None]
    new_ids = torch.where(masked, torch.full_like(sampled, mask_id), sampled)
    return StepOutput(ids=new_ids, masked=masked, sampled_ids=sampled)
