"""The cosine masking schedule (MaskGIT, Chang et al. 2022; RayGen paper section 3.2).

One function gamma(r) = cos(pi/2 * r) maps progress r in [0, 1] to the share of tokens that is
masked: gamma(0) = 1 (everything masked), gamma(1) = 0 (nothing masked). It serves both sides:

- training draws r ~ U(0, 1) per sample and masks ceil(gamma(r) * N) tokens, clamped to [1, N], so
  every sample contributes at least one masked token to the loss;
- decoding with K steps keeps floor(gamma((k + 1) / K) * N) tokens masked after step k (0-based),
  so the last step leaves none.

Pure functions: no network, randomness only from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch


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
