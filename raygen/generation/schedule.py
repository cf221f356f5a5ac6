"""The cosine masking schedule (MaskGIT, Chang et al. 2022; RayGen paper section 3.2).

One function gamma(r) = cos(pi/2 * r) maps progress r in [0, 1] to the share of tokens that is
masked: gamma(0) = 1 (everything masked), gamma(1) = 0 (nothing masked). It serves both sides:

- training draws r ~ U(0, 1) per sample and masks ceil(gamma(r) * N) tokens, clamped to [1, N], so
  every sample contributes at least one masked token to the loss (:mod:`raygen.generation.objective`);
- decoding with K steps follows one of two named loops (:data:`SCHEDULES`):

  ``maskgit`` (MaskGIT-style, the default): keeps floor(gamma((k + 1) / K) * N) tokens masked after
  step k (0-based), so the last step leaves none. K=3, N=1024: 886, 512, 0.

  ``raygen_paper`` (the RayGen authors' ``generate``, itself lucidrains' muse-maskgit-pytorch loop):
  step k sees max(int(gamma(t_k) * N), 1) masked tokens with t_k = linspace(0, 1, K)[k], so after
  step k that many of step k + 1's count stay masked, and none after the last step. Because of the
  ``max(., 1)``, the last step re-predicts exactly one token. K=3, N=1024: 724, 1, 0.

Pure functions: no network, randomness only from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("maskgit", "raygen_paper")  # decoding loops; see the module docstring


def mask_ratio(progress: torch.Tensor | float) -> torch.Tensor | float:
    """gamma(r) = cos(pi/2 * r): the masked share at progress ``r`` in [0, 1] (1 -> 0, decreasing)."""
    if isinstance(progress, torch.Tensor):
        return torch.cos(progress.clamp(0.0, 1.0) * (math.pi / 2))
    return math.cos(min(max(float(progress), 0.0), 1.0) * math.pi / 2)


def masked_count_after(step: int, total_steps: int, num_tokens: int) -> int:
    """Tokens still masked after decode step ``step`` (0-based) of ``total_steps``.

    Non-increasing in ``step``, ``num_tokens`` never exceeded, 0 after the last step.
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside [0, {total_steps})")
    if step == total_steps - 1:
        return 0
    return int(math.floor(mask_ratio((step + 1) / total_steps) * num_tokens))


def paper_masked_input(step: int, total_steps: int, num_tokens: int) -> int:
    """Masked tokens in the canvas that step ``step`` (0-based) of the authors' loop feeds the network.

    ``max(int(cos(pi/2 * t) * N), 1)`` with ``t = linspace(0, 1, K)[step]``, computed in float32 as the
    authors' torch code does, so the counts match theirs exactly. Step 0 sees all N tokens masked.
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside [0, {total_steps})")
    t = torch.linspace(0, 1, total_steps)[step]  # float32, like the original
    return max(int((torch.cos(t * math.pi * 0.5) * num_tokens).item()), 1)


def remask_count(schedule: str, step: int, total_steps: int, num_tokens: int) -> int:
    """Tokens left masked after decode step ``step`` (0-based) of ``total_steps`` under ``schedule``.

    Non-increasing in ``step``, 0 after the last step, for both loops of :data:`SCHEDULES`.
    """
    if schedule == "maskgit":
        return masked_count_after(step, total_steps, num_tokens)
    if schedule != "raygen_paper":
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside [0, {total_steps})")
    return 0 if step == total_steps - 1 else paper_masked_input(step + 1, total_steps, num_tokens)


def sample_train_mask(
    batch: int, num_tokens: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A training mask: per sample, ceil(gamma(r) * N) random positions with r ~ U(0, 1).

    Returns a bool tensor (batch, num_tokens), True = masked; every row has between 1 and
    ``num_tokens`` masked positions. ``generator`` must live on ``device``.
    """
    r = torch.rand(batch, generator=generator, device=device)  # (B,)
    counts = torch.ceil(mask_ratio(r) * num_tokens).clamp_(1, num_tokens)  # (B,)
    # Random positions: the `count` smallest of i.i.d. uniform scores (a random permutation's prefix).
    scores = torch.rand(batch, num_tokens, generator=generator, device=device)  # (B, N)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # (B, N) rank of each position
    return ranks < counts[:, None]
