"""The K-step masked-token sampler: a fully masked canvas to a full token grid.

The network (:class:`raygen.models.decoder.MaskedTokenDecoder`) and the process are separate: this
module runs the loop, :mod:`raygen.generation.step` does one step, :mod:`raygen.generation.schedule`
says how many tokens stay masked. The text's cross-attention keys/values are computed once per
call (conditional and null prompt in one batch), never once per step.

Two decoding loops are offered (``SamplerConfig.schedule``; details in
:mod:`raygen.generation.schedule` and :mod:`raygen.generation.step`):

- ``maskgit`` (the default): a MaskGIT-style loop; after step k, floor(cos(pi/2 (k+1)/K) N) of the
  new tokens stay masked, temperature T (1 - k/K), confidence from the top-share-filtered logits.
- ``raygen_paper``: the RayGen authors' own loop (their ``generate``, lucidrains' muse-maskgit-pytorch
  loop): step k sees max(int(cos(pi/2 t_k) N), 1) masked tokens, t_k = linspace(0, 1, K)[k],
  temperature T (K-1-k)/K (the last step greedy), re-masking by 1 - p under the unfiltered softmax.

Classifier-free guidance mixes the two passes as ``uncond + s * (cond - uncond)``: ``s = 1`` is the
plain conditional model (the paper's sampling; the null pass is skipped), ``s = 0`` the
unconditional one, ``s > 1`` pushes towards the prompt. ``cfg_schedule`` says how ``s`` runs over the
K steps (:func:`guidance_scale`): ``constant`` (every step ``s``) or ``linear`` (from 1 at the first
step up to ``s`` at the last). Early steps fix the image's layout; guiding them pulls every sample of a
prompt towards the same one, which is why guidance restricted to later steps keeps more diversity
(Kynkaanniemi et al., 2024, "Applying guidance in a limited interval ...").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from raygen.generation.schedule import SCHEDULES
from raygen.generation.step import decode_step
from raygen.models.decoder import DecoderConfig, MaskedTokenDecoder, TextContext
from raygen.runtime import autocast

CFG_SCHEDULES = ("constant", "linear")  # how the guidance scale runs over the steps; see guidance_scale


@dataclass(frozen=True)
class SamplerConfig:
    """Sampling settings shared by ``raygen generate``, the ``synthesize`` stage and training sample grids."""

    steps: int = 3  # K parallel decoding steps (paper: K=3)
    temperature: float = 1.3  # sampling temperature T (paper: T=1.3); the schedule says how it anneals
    temperature_anneal: bool = True  # maskgit: T -> T/K over the steps; raygen_paper: T(K-1)/K -> 0
    alpha: float = 0.5  # drop the lowest alpha share of logits before sampling, keep the top 1-alpha (paper: 0.5)
    gumbel_scale: float = 0.0  # Gumbel noise on the confidence (MaskGIT uses 4.5); 0 = paper's none
    cfg_scale: float = 1.0  # classifier-free guidance s; 1 = conditional only (paper), 0 = unconditional
    batch_size: int = 16  # prompts decoded together (memory / speed trade-off)
    schedule: str = "maskgit"  # decoding loop: maskgit (MaskGIT-style) | raygen_paper (the authors' own)
    cfg_schedule: str = "constant"  # guidance over the steps: constant (s throughout) | linear (1 up to s)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.temperature < 0 or self.cfg_scale < 0 or self.gumbel_scale < 0:
            raise ValueError(
                f"temperature, cfg_scale and gumbel_scale must be >= 0, got {self.temperature}, "
                f"{self.cfg_scale}, {self.gumbel_scale}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "raygen_paper" and self.gumbel_scale > 0:
            raise ValueError("schedule raygen_paper has no confidence noise: gumbel_scale must be 0")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}")


def guidance_scale(scale: float, step: int, total_steps: int, cfg_schedule: str) -> float:
    """The guidance scale at decode step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``scale`` at every step. ``linear``: 1 (the plain conditional model) at the first
    step, rising linearly to ``scale`` at the last; one step gives ``scale``.
    """
    if cfg_schedule == "constant" or total_steps == 1:
        return scale
    if cfg_schedule != "linear":
        raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {cfg_schedule!r}")
    return 1.0 + (scale - 1.0) * step / (total_steps - 1)


@dataclass(frozen=True)
class SampleOutput:
    """Result of :func:`sample_tokens`.

    ids:     (B, N) int64 codebook ids in [0, codebook_size), no mask token left.
    history: one (B, N) int64 canvas per step (mask id where still masked), when asked for.
    """

    ids: torch.Tensor
    history: list[torch.Tensor]


@torch.inference_mode()
def sample_tokens(
    model: MaskedTokenDecoder,
    text_states: torch.Tensor,
    text_lengths: torch.Tensor,
    config: SamplerConfig,
    generator: torch.Generator,
    null_states: torch.Tensor | None = None,
    null_length: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    keep_history: bool = False,
) -> SampleOutput:
    """Generate token grids for a batch of prompts.

    text_states:  (B, L, D) float text states (fp16 caches are fine), on the model's device.
    text_lengths: (B,) int real tokens per prompt.
    null_states:  (L, D) the null prompt's states and ``null_length`` its length; needed when
                  ``config.cfg_scale != 1``.
    generator:    a ``torch.Generator`` on the model's device; the same seed gives the same ids.
    autocast_dtype: e.g. ``torch.bfloat16`` on CUDA, None for fp32.
    """
    model.eval()
    device = text_states.device
    batch = text_states.shape[0]
    cfg = model.config
    scales = [guidance_scale(config.cfg_scale, k, config.steps, config.cfg_schedule) for k in range(config.steps)]
    states, lengths = _guidance_passes(text_states, text_lengths, scales, null_states, null_length)

    ids = torch.full((batch, cfg.num_tokens), cfg.mask_id, dtype=torch.long, device=device)
    history: list[torch.Tensor] = []
    with autocast(device, autocast_dtype):
        context = model.encode_text(torch.cat(states), torch.cat(lengths).long())  # once per call
        for step in range(config.steps):
            logits = _guided_logits(model, ids, context, scales[step], len(states))
            out = decode_step(
                logits,
                ids,
                step,
                config.steps,
                cfg.mask_id,
                generator,
                temperature=config.temperature,
                temperature_anneal=config.temperature_anneal,
                alpha=config.alpha,
                gumbel_scale=config.gumbel_scale,
                schedule=config.schedule,
            )
            ids = out.ids
            if keep_history:
                history.append(ids.clone())
    return SampleOutput(ids=ids, history=history)


def _guided_logits(
    model: MaskedTokenDecoder, ids: torch.Tensor, context: TextContext, scale: float, passes: int
) -> torch.Tensor:
    """(B, N, V) float logits of one step at guidance ``scale``.

    ``context`` holds the prompts' rows, then the null prompt's, when both were encoded (``passes`` 2);
    a step at scale 1 (or 0) runs only the conditional (or unconditional) half.
    """
    if passes == 1:
        return model.decode(ids, context).float()
    if scale in (0.0, 1.0):
        return model.decode(ids, context.half(first=scale == 1.0)).float()
    cond, uncond = model.decode(ids.repeat(2, 1), context).float().chunk(2)
    return uncond + scale * (cond - uncond)


def _guidance_passes(
    text_states: torch.Tensor,
    text_lengths: torch.Tensor,
    scales: list[float],
    null_states: torch.Tensor | None,
    null_length: int | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The text of each forward pass: the prompts unless every step's scale is 0, then the null prompt
    unless every step's scale is 1."""
    device, batch = text_states.device, text_states.shape[0]
    need_cond, need_uncond = any(s != 0.0 for s in scales), any(s != 1.0 for s in scales)
    if need_uncond and (null_states is None or null_length is None):
        raise ValueError("cfg_scale != 1 needs the null prompt (null_states, null_length)")
    states, lengths = [], []
    if need_cond:
        states.append(text_states)
        lengths.append(text_lengths.to(device))
    if need_uncond:
        states.append(null_states.to(device=device, dtype=text_states.dtype)[None].expand(batch, -1, -1))
        lengths.append(torch.full((batch,), int(null_length), device=device, dtype=torch.long))
    return states, lengths


@dataclass(frozen=True)
class TrainedDecoder:
    """A decoder loaded from a ``train_decoder`` checkpoint, with what sampling needs beside it.

    null_states: (L, D) float16 null prompt (condition dropout / CFG); null_length its length.
    config:      the checkpoint's resolved config (params, decoder config, cache metas).
    """

    model: MaskedTokenDecoder
    null_states: torch.Tensor
    null_length: int
    config: dict

    @property
    def token_meta(self) -> dict:
        """The meta.json of the tokens it learned (empty when the checkpoint kept none): says which VQ-GAN made them."""
        return self.config.get("token_meta", {})


def load_decoder_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> TrainedDecoder:
    """Load ``results/train_decoder/model.ckpt`` (weights_only) into an eval-mode decoder on ``device``."""
    from raygen.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    dec = dict(state["config"]["decoder"])
    dec["grid"] = tuple(dec["grid"])
    model = MaskedTokenDecoder(DecoderConfig(**dec))
    model.load_state_dict(state["model"])
    model.to(device).eval().requires_grad_(False)
    null = state["null_text"]
    return TrainedDecoder(
        model=model, null_states=null["states"].to(device), null_length=int(null["length"]), config=state["config"]
    )
