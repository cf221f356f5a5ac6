"""One parallel decoding step of masked-token generation (MaskGIT / MUSE), without a network.

Given the network's logits for every position and the current canvas, :func:`decode_step`

1. filters the logits, keeping the top ``1 - alpha`` share of the codebook per position (the
   paper's alpha = 0.5 filter, lucidrains' ``top_k(thres=alpha)``),
2. samples a token for every still-masked position at the (annealed) temperature with Gumbel-max,
3. scores each new token by its log-probability, plus optional annealed Gumbel noise (MaskGIT),
4. keeps the cosine schedule's number of least-confident new tokens masked and fixes the rest.

Tokens fixed in an earlier step keep their id and are never re-masked; after the last step no
position is masked. Randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from raygen.generation.schedule import masked_count_after


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


def step_temperature(temperature: float, step: int, total_steps: int, anneal: bool) -> float:
    """Sampling temperature at ``step``: constant, or annealed linearly from T to T/K."""
    return temperature * (1.0 - step / total_steps) if anneal else temperature


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
) -> StepOutput:
    """Sample masked positions from ``logits`` and re-mask the least confident on the schedule.

    logits: (B, N, V) float, V = codebook size (the mask id is not a choice).
    ids:    (B, N) int64, ``mask_id`` at masked positions.
    step:   0-based index of this step among ``total_steps``.
    temperature <= 0 means greedy (argmax). ``gumbel_scale`` multiplies Gumbel noise on the
    confidence, annealed by ``1 - (step + 1) / total_steps`` (MaskGIT's choice_temperature).
    """
    num_tokens = logits.shape[1]
    unknown = ids == mask_id  # (B, N)
    logits = filter_top_share(logits.float(), alpha)  # (B, N, V)
    temp = step_temperature(temperature, step, total_steps, temperature_anneal)
    if temp > 0:
        noisy = logits / temp + gumbel_noise(logits.shape, generator, logits.device)
        sampled = noisy.argmax(dim=-1)  # (B, N) Gumbel-max = a draw from softmax(logits / T)
    else:
        sampled = logits.argmax(dim=-1)
    sampled = torch.where(unknown, sampled, ids)

    # Confidence of each new token; fixed tokens get +inf so they are never chosen for re-masking.
    log_probs = logits.log_softmax(dim=-1).gather(-1, sampled[..., None]).squeeze(-1)  # (B, N)
    if gumbel_scale > 0:
        scale = gumbel_scale * (1.0 - (step + 1) / total_steps)
        log_probs = log_probs + scale * gumbel_noise(log_probs.shape, generator, logits.device)
    confidence = torch.where(unknown, log_probs, torch.full_like(log_probs, float("inf")))

    # Keep the scheduled count masked, but fix at least one new token per step while any remain.
    target = masked_count_after(step, total_steps, num_tokens)
    n_unknown = unknown.sum(dim=1)  # (B,)
    keep_masked = torch.minimum(torch.full_like(n_unknown, target), (n_unknown - 1).clamp(min=0))  # (B,)
    ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1)  # (B, N), 0 = least confident
    masked = ranks < keep_masked[:, None]
    new_ids = torch.where(masked, torch.full_like(sampled, mask_id), sampled)
    return StepOutput(ids=new_ids, masked=masked, sampled_ids=sampled)
