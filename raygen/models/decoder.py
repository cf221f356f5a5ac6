"""The masked-token decoder: a bidirectional transformer over VQ-GAN tokens, conditioned on text.

RayGen paper section 3.1: the image is a grid of codebook ids (32x32, codebook 1024 in the paper)
plus one extra mask token (id = codebook size). Learned positional embeddings; each pre-layer-norm
residual block has self-attention over the image tokens, cross-attention to the projected text
states (with the text padding mask) and a GELU feed-forward; a final projection gives logits over
the codebook (never the mask token).

The text side is split out (:meth:`MaskedTokenDecoder.encode_text`) so the cross-attention keys
and values are computed once per prompt and reused for every decoding step; training calls
``forward`` which does both. Grid, codebook and text width come from the token and text caches at
build time (:func:`build_decoder`); the presets in :mod:`raygen.models.decoder_presets` hold only the
shape of the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raygen.models.decoder_presets import DECODER_PRESETS

# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention over the image tokens (no mask: the model is bidirectional)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, N, dh)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, w))


class CrossAttention(nn.Module):
    """Image queries attend to text keys/values; K/V come precomputed from :meth:`text_kv`."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def text_kv(self, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, W) projected text -> keys and values, each (B, H, L, dh)."""
        b, length, w = text_emb.shape
        k, v = self.kv(text_emb).view(b, length, 2, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q = self.q(x).view(b, n, self.heads, w // self.heads).transpose(1, 2)  # (B, H, N, dh)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-LN residual block: self-attention, cross-attention to text, GELU feed-forward."""

    def __init__(self, width: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = SelfAttention(width, heads, dropout)
        self.ln_cross = nn.LayerNorm(width)
        self.cross_attn = CrossAttention(width, heads, dropout)
        self.ln_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Linear(ffn, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.ln_self(x)))
        x = x + self.drop(self.cross_attn(self.ln_cross(x), k, v, attn_mask))
        return x + self.drop(self.ffn(self.ln_ffn(x)))


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderConfig:
    """Everything that fixes the network's parameter shapes.

    ``grid``, ``codebook_size`` and ``text_dim`` come from the token / text cache metas; the rest
    from a preset.
    """

    grid: tuple[int, int]  # (h, w) image tokens per side (paper: 32x32)
    codebook_size: int  # VQ-GAN codebook entries (paper: 1024); the mask id is this number
    text_dim: int  # width of the cached text states (CXR-BERT 768, MiniLM 384)
    width: int = 1024  # model width d (paper section 3.1)
    depth: int = 6  # transformer blocks (paper)
    heads: int = 8  # attention heads (paper)
    ffn: int = 4096  # feed-forward hidden width (paper)
    dropout: float = 0.1  # residual / attention dropout

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def mask_id(self) -> int:
        """The mask token id: one past the codebook (RayGen uses 1024 with a 1024-entry codebook)."""
        return self.codebook_size


def decoder_config(preset: str, grid: tuple[int, int] | list[int], codebook_size: int, text_dim: int) -> DecoderConfig:
    """The config of preset ``preset`` for caches with this grid, codebook size and text width."""
    if preset not in DECODER_PRESETS:
        raise KeyError(f"unknown decoder preset {preset!r}; choose one of {', '.join(DECODER_PRESETS)}")
    h, w = (int(v) for v in grid)
    return DecoderConfig(
        grid=(h, w), codebook_size=int(codebook_size), text_dim=int(text_dim), **DECODER_PRESETS[preset]
    )


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass
class TextContext:
    """Per-prompt cross-attention inputs, computed once and reused across decoding steps.

    kv:        one (keys, values) pair per block, each (B, H, L, dh).
    attn_mask: (B, 1, 1, L) bool, True = a real text token (SDPA convention: True takes part).
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    attn_mask: torch.Tensor

    def half(self, first: bool) -> TextContext:
        """The first (or second) half of the rows: one of two prompt sets encoded together."""
        rows = len(self.attn_mask) // 2
        part = slice(None, rows) if first else slice(rows, None)
        return TextContext([(k[part], v[part]) for k, v in self.kv], self.attn_mask[part])


class MaskedTokenDecoder(nn.Module):
    """Bidirectional text-conditioned transformer predicting codebook ids for masked tokens."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.codebook_size + 1, c.width)  # +1: the mask token
        self.pos_emb = nn.Parameter(torch.zeros(1, c.num_tokens, c.width))
        self.text_proj = nn.Linear(c.text_dim, c.width)
        self.text_norm = nn.LayerNorm(c.width)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.ffn, c.dropout) for _ in range(c.depth))
        self.ln_out = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.codebook_size)  # never predicts the mask token
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * depth) so the
        # residual stream's variance does not grow with depth.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        scaled = 0.02 / math.sqrt(2 * self.config.depth)
        for block in self.blocks:
            nn.init.normal_(block.self_attn.proj.weight, std=scaled)
            nn.init.normal_(block.cross_attn.proj.weight, std=scaled)
            nn.init.normal_(block.ffn[2].weight, std=scaled)

    def encode_text(self, text_states: torch.Tensor, text_lengths: torch.Tensor) -> TextContext:
        """Project text states and compute every block's cross-attention keys/values once.

        text_states:  (B, L, D) float (fp16 caches are cast to the model dtype).
        text_lengths: (B,) int, real tokens per row; positions >= length are padding.
        """
        emb = self.text_norm(self.text_proj(text_states.to(self.text_proj.weight.dtype)))  # (B, L, W)
        length = text_states.shape[1]
        valid = torch.arange(length, device=emb.device)[None, :] < text_lengths.clamp(min=1)[:, None]  # (B, L)
        kv = [block.cross_attn.text_kv(emb) for block in self.blocks]
        return TextContext(kv=kv, attn_mask=valid[:, None, None, :])

    def decode(self, ids: torch.Tensor, context: TextContext, select: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for image tokens given a precomputed text context.

        ids:    (B, N) int64 in [0, codebook_size], the mask id where masked.
        select: optional (B, N) bool; when given, only those positions go through the output head
                (training projects only masked positions) and the result is (M, V), M = select.sum().
        Returns (B, N, V) float logits, or (M, V) with ``select``.
        """
        x = self.tok_emb(ids) + self.pos_emb  # (B, N, W)
        for block, (k, v) in zip(self.blocks, context.kv):
            x = block(x, k, v, context.attn_mask)
        if select is not None:
            x = x[select]  # (M, W)
        return self.head(self.ln_out(x))

    def forward(
        self,
        ids: torch.Tensor,
        text_states: torch.Tensor,
        text_lengths: torch.Tensor,
        select: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training entry point: :meth:`encode_text` then :meth:`decode` (shapes as there)."""
        return self.decode(ids, self.encode_text(text_states, text_lengths), select)


def build_decoder(
    preset: str, grid: tuple[int, int] | list[int], codebook_size: int, text_dim: int
) -> MaskedTokenDecoder:
    """A freshly initialised decoder of ``preset`` sized for the given caches."""
    return MaskedTokenDecoder(decoder_config(preset, grid, codebook_size, text_dim))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
