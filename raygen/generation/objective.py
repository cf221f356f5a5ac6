"""The decoder's training objective (RayGen paper section 3.2): cross-entropy on masked tokens.

Each sample masks ceil(gamma(r) * N) tokens with r ~ U(0, 1) (:func:`raygen.generation.schedule.sample_train_mask`),
``cond_dropout`` of the samples see the null prompt instead of their own (so classifier-free guidance
works at sampling time), and only the masked positions go through the output head and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raygen.data.token_dataset import TokenBatch
from raygen.generation.schedule import sample_train_mask


@dataclass(frozen=True)
class MaskedLoss:
    """One batch's masked-token loss. loss: scalar mean cross-entropy; correct / masked: 0-d tensors."""

    loss: torch.Tensor
    correct: torch.Tensor
    masked: torch.Tensor


def masked_loss(
    model: torch.nn.Module,
    batch: TokenBatch,
    mask_id: int,
    generator: torch.Generator,
    null: tuple[torch.Tensor, int] | None,
    cond_dropout: float,
) -> MaskedLoss:
    """Cross-entropy on the masked positions of one batch.

    Masks follow the cosine schedule; ``cond_dropout`` of the rows get the null prompt
    ``null = (states (L, D), length)``. Only masked positions go through the output head.
    """
    ids, states, lengths = batch.ids, batch.text_states, batch.text_lengths
    b, n = ids.shape
    device = ids.device
    mask = sample_train_mask(b, n, generator, device)  # (B, N) True = masked
    if cond_dropout > 0 and null is not None:
        drop = torch.rand(b, generator=generator, device=device) < cond_dropout  # (B,)
        states = torch.where(drop[:, None, None], null[0][None].to(states.dtype), states)
        lengths = torch.where(drop, torch.full_like(lengths, null[1]), lengths)
    logits = model(ids.masked_fill(mask, mask_id), states, lengths, select=mask)  # (M, V)
    target = ids[mask]  # (M,)
    loss = F.cross_entropy(logits.float(), target)
    correct = (logits.detach().argmax(dim=-1) == target).sum()
    return MaskedLoss(loss=loss, correct=correct, masked=mask.sum())
