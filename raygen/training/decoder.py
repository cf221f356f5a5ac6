"""Training the masked-token decoder: state, resume, the step loop, validation and sample grids.

The loop reads only the memory-mapped caches. Each step takes :func:`raygen.generation.objective.masked_loss`,
clips the global gradient norm and steps AdamW and the warm-up + cosine schedule. Logging (about 20 times
a run) is the only device sync. Several processes (torchrun, DDP) each hold a rank's share of the batch;
rank 0 writes checkpoints, samples and metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import save_checkpoint
from raygen.config import to_dict
from raygen.data.token_dataset import TokenTextDataset
from raygen.generation import render
from raygen.generation.objective import masked_loss
from raygen.generation.sampler import SamplerConfig, TrainedDecoder
from raygen.models.decoder import DecoderConfig, MaskedTokenDecoder, count_parameters
from raygen.runtime import Dist, autocast, autocast_dtype, seed_everything
from raygen.training.scaffolding import (
    adamw,
    essential_config,
    restore_rng,
    resumable,
    rng_state,
    warmup_cosine_scheduler,
)

if TYPE_CHECKING:
    from raygen.stages.train_decoder import TrainDecoderParams

log = logging.getLogger(__name__)

SAMPLE_PROMPTS = 8  # fixed validation prompts in the sample grid
MUSE_BETAS = (0.9, 0.96)  # AdamW betas as MUSE
LR_FLOOR = 0.1  # the cosine decay ends at this share of the peak learning rate
# Params that may change between a killed run and its resumption without invalidating it.
RESUME_FREE = ("checkpoint_every", "sample_every", "sample_schedule", "workers", "device", "compile", "gpus")


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything the loop mutates and a checkpoint stores."""

    model: MaskedTokenDecoder  # the raw (unwrapped, uncompiled) network
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # masks and condition dropout
    step: int = 0


@dataclass(frozen=True)
class DecoderRun:
    """What a training run works with besides its :class:`TrainState`."""

    params: TrainDecoderParams
    ctx: Dist
    config: dict[str, Any]  # the checkpoint's config: resolved params, profile, decoder, both cache metas
    null: tuple[torch.Tensor, int]  # the null prompt (states (L, D) on the device, length)
    out: Path  # the stage's output folder
    vq: Any = None  # the VQ-GAN for sample grids (rank 0), or None for token maps


def make_optimizer(model: torch.nn.Module, params: TrainDecoderParams, device: torch.device) -> torch.optim.AdamW:
    """AdamW (MUSE's betas) with weight decay on matrices and embeddings only."""
    return adamw(model, params.lr, params.weight_decay, device, betas=MUSE_BETAS)


def run_config(
    params: TrainDecoderParams, profile: str, decoder: DecoderConfig, train: TokenTextDataset, ctx: Dist
) -> dict[str, Any]:
    """The ``config`` every checkpoint of this run stores (and a resume must match)."""
    return {
        "params": to_dict(params),
        "profile": profile,
        "decoder": to_dict(decoder),
        "token_meta": train.token_meta,
        "text_meta": train.text_meta,
        "world_size": ctx.world_size,
    }


def new_state(params: TrainDecoderParams, decoder: DecoderConfig, ctx: Dist) -> TrainState:
    """Initial weights (the same on every rank), optimizer, schedule and the rank's mask generator."""
    torch.manual_seed(params.seed)  # same initial weights on every rank
    model = MaskedTokenDecoder(decoder).to(ctx.device)
    seed_everything(params.seed + ctx.rank)  # dropout differs per rank
    optimizer = make_optimizer(model, params, ctx.device)
    scheduler = warmup_cosine_scheduler(optimizer, params.warmup_steps, params.steps, floor=LR_FLOOR)
    generator = torch.Generator(device=ctx.device).manual_seed(params.seed * 100_003 + ctx.rank)
    return TrainState(model, optimizer, scheduler, generator)


def start_from_pinned(state: TrainState, folder: Path | None, vqgan_dir: Path | None, text_meta: dict) -> None:
    """The pinned pre-trained decoder's weights in place of the random ones (``init: demo``); a resumed
    checkpoint, loaded after, replaces them again."""
    from raygen.errors import UsageError
    from raygen.training.pinned_decoder import load_pinned_decoder

    if folder is None:
        raise UsageError("train_decoder.init: demo needs --demo-weights (the folder of params inputs.demo)")
    state.model.load_state_dict(load_pinned_decoder(folder, state.model.config, vqgan_dir, text_meta))
    log.info("starting from the pinned decoder in %s", folder)


def resume(state: TrainState, path: Path, config: dict[str, Any], ctx: Dist) -> None:
    """Continue from ``path`` when a run with the same essential settings wrote it (world size may differ)."""
    resumed = resumable(
        path,
        config,
        lambda cfg: essential_config(cfg, RESUME_FREE, unchecked=("world_size",)),
        "%s was written with other settings or caches; starting afresh",
    )
    if resumed is None:
        return
    state.model.load_state_dict(resumed["model"])
    state.optimizer.load_state_dict(resumed["optimizer"])
    state.scheduler.load_state_dict(resumed["scheduler"])
    restore_rng(resumed["rng"], state.generator, ctx)
    state.step = int(resumed["step"])
    log.info("resumed from %s at step %d", path, state.step)


def log_model(model: MaskedTokenDecoder, params: TrainDecoderParams, ctx: Dist) -> None:
    config = model.config
    log.info(
        "decoder %s: %.2fM parameters, %d tokens, codebook %d, text dim %d; %d processes on %s",
        params.preset,
        count_parameters(model) / 1e6,
        config.num_tokens,
        config.codebook_size,
        config.text_dim,
        ctx.world_size,
        ctx.device,
    )


def forward_model(model: MaskedTokenDecoder, params: TrainDecoderParams, ctx: Dist) -> torch.nn.Module:
    """What the loop calls: the model, wrapped in DDP with several processes, compiled when asked."""
    wrapped: torch.nn.Module = model
    if ctx.world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if params.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def load_vqgan_or_none(vqgan_dir: Path | None, device: torch.device, token_meta: dict[str, Any]) -> Any:
    """The VQ-GAN for sample grids, checked to be the one that made the training tokens (``token_meta``),
    or None (token maps instead) when no folder was given."""
    if vqgan_dir is None:
        log.info("no --vqgan given: sample grids show token maps")
        return None
    return render.load_vqgan(vqgan_dir, device, token_meta=token_meta)


# ---------------------------------------------------------------------------------------------
# Checkpoints, evaluation and samples
# ---------------------------------------------------------------------------------------------


def checkpoint_state(state: TrainState, run: DecoderRun) -> dict:
    """The checkpoint dict; a collective call (every rank's RNG state is gathered)."""
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
        "config": run.config,
        "null_text": {"states": run.null[0].cpu(), "length": run.null[1]},
        "rng": rng_state(state.generator, run.ctx),
    }


def save_last(state: TrainState, run: DecoderRun) -> None:
    """``last.ckpt`` (every rank takes part, rank 0 writes)."""
    ckpt = checkpoint_state(state, run)
    if run.ctx.main:
        save_checkpoint(run.out / "last.ckpt", ckpt)


@torch.no_grad()
def evaluate(
    model: MaskedTokenDecoder,
    data: TokenTextDataset,
    batch_size: int,
    seed: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, float]:
    """Masked-token loss and accuracy over ``data`` with fixed-seed masks (comparable across runs)."""
    if len(data) == 0:
        return {"val_loss": float("nan"), "val_masked_accuracy": float("nan")}
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed + 7919)
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        batch = data.gather(np.arange(start, min(start + batch_size, len(data)))).to(device)
        with autocast(device, amp):
            out = masked_loss(model, batch, model.config.mask_id, generator, None, 0.0)
        masked = int(out.masked)
        loss_sum += float(out.loss) * masked
        correct += int(out.correct)
        count += masked
    model.train()
    return {"val_loss": loss_sum / count, "val_masked_accuracy": correct / count}


def write_samples(
    model: MaskedTokenDecoder,
    data: TokenTextDataset,
    null: tuple[torch.Tensor, int],
    vq: Any,
    path: Path,
    seed: int,
    device: torch.device,
    schedule: str = "maskgit",
) -> None:
    """Images for the first validation prompts (paper sampling settings, ``schedule``'s loop) into ``path``."""
    rows = np.arange(min(SAMPLE_PROMPTS, len(data)))
    batch = data.gather(rows).to(device)
    trained = TrainedDecoder(model=model, null_states=null[0].to(device), null_length=null[1], config={})
    images, _ = render.generate_images(
        trained,
        batch.text_states,
        batch.text_lengths,
        SamplerConfig(batch_size=SAMPLE_PROMPTS, schedule=schedule),
        seed,
        vq,
    )
    render.save_image_grid(images, path, titles=[str(t) for t in data.frame["text"].iloc[rows]])
    model.train()


def sample_grid(state: TrainState, run: DecoderRun, prompts: TokenTextDataset, path: Path) -> None:
    """:func:`write_samples` with the run's settings."""
    params = run.params
    write_samples(state.model, prompts, run.null, run.vq, path, params.seed, run.ctx.device, params.sample_schedule)


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopStats:
    """Measured over the training loop (checkpoint and sampling time excluded)."""

    train_loss: float  # mean over the last logging window
    train_masked_accuracy: float
    samples_per_s: float  # global samples / s, first logging window (warm-up, compile) excluded
    data_time_share: float  # share of loop time spent waiting for batches
    loop_s: float


def _on_step_end(step: int) -> None:
    """Called after every optimizer step (a seam for fault-injection tests)."""


class LoopMeter:
    """Loop-time bookkeeping: time waiting for data vs total, and the steady-state sample rate
    (the first logging window, with warm-up and compilation, is left out unless it is the only one)."""

    def __init__(self) -> None:
        self.busy = self.data = self.steady_busy = 0.0
        self.steady_samples = 0
        self.window_busy, self.window_samples, self.windows = 0.0, 0, 0

    def add(self, data_s: float, total_s: float, samples: int) -> None:
        self.data += data_s
        self.busy += total_s
        self.window_busy += total_s
        self.window_samples += samples

    def close_window(self, last: bool) -> float:
        """End a logging window; returns its samples/s."""
        rate = self.window_samples / max(self.window_busy, 1e-9)
        if self.windows or last:
            self.steady_busy += self.window_busy
            self.steady_samples += self.window_samples
        self.windows += 1
        self.window_busy, self.window_samples = 0.0, 0
        return rate

    @property
    def data_share(self) -> float:
        return self.data / self.busy if self.busy else float("nan")

    @property
    def samples_per_s(self) -> float:
        return self.steady_samples / self.steady_busy if self.steady_busy else float("nan")


def optimizer_step(state: TrainState, params: TrainDecoderParams) -> None:
    """Clip, step optimizer and schedule, clear gradients, count the step."""
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), params.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1


def train_step(
    state: TrainState, forward: torch.nn.Module, batch: Any, run: DecoderRun, amp: torch.dtype | None
) -> torch.Tensor:
    """One optimizer step; returns (loss * masked, correct, masked) as a float64 (3,) device tensor."""
    params = run.params
    with autocast(run.ctx.device, amp):
        out = masked_loss(forward, batch, state.model.config.mask_id, state.generator, run.null, params.cond_dropout)
    out.loss.backward()
    optimizer_step(state, params)
    return torch.stack([out.loss.detach().double() * out.masked, out.correct.double(), out.masked.double()])


def close_window(window: torch.Tensor, ctx: Dist) -> list[float]:
    """The logging window's (loss * masked, correct, masked) summed over ranks; zeroes it. Syncs the device."""
    if ctx.world_size > 1:
        dist.all_reduce(window)
    totals = window.tolist()  # syncs the device
    window.zero_()
    return totals


def log_window(
    totals: list[float], state: TrainState, run: DecoderRun, meter: LoopMeter, tracker: tracking.Tracker, bar: tqdm
) -> dict[str, float]:
    """A closed logging window's loss and accuracy to MLflow and the progress bar."""
    loss_masked, correct, masked = totals
    last = {"loss": loss_masked / masked, "acc": correct / masked}
    rate = meter.close_window(last=state.step == run.params.steps)
    tracker.log_metrics(
        {
            "train_loss": last["loss"],
            "train_masked_accuracy": last["acc"],
            "lr": state.scheduler.get_last_lr()[0],
            "samples_per_s": rate,
            "data_time_share": meter.data_share,
        },
        step=state.step,
    )
    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['acc']:.3f}", sps=f"{rate:.0f}")
    return last


def train_loop(
    state: TrainState,
    forward: torch.nn.Module,
    loader: Any,
    run: DecoderRun,
    prompts: TokenTextDataset,
    tracker: tracking.Tracker,
) -> LoopStats:
    """Run steps ``state.step .. steps - 1``; logs ~20 times per run (the only device syncs)."""
    params, ctx = run.params, run.ctx
    amp = autocast_dtype(ctx.device, params.precision)
    log_every = max(1, min(100, params.steps // 20))
    window = torch.zeros(3, device=ctx.device, dtype=torch.float64)  # loss * masked, correct, masked
    last, meter = {"loss": float("nan"), "acc": float("nan")}, LoopMeter()
    state.model.train()
    bar = tqdm(total=params.steps, initial=state.step, desc="train_decoder", disable=not ctx.main, mininterval=2.0)
    batches = iter(loader)
    while state.step < params.steps:
        tic = time.perf_counter()
        batch = next(batches).to(ctx.device)
        got = time.perf_counter()
        window += train_step(state, forward, batch, run, amp)
        _on_step_end(state.step)
        logging_step = state.step % log_every == 0 or state.step == params.steps
        totals = close_window(window, ctx) if logging_step else None
        meter.add(got - tic, time.perf_counter() - tic, len(batch) * ctx.world_size)
        if totals is not None:
            last = log_window(totals, state, run, meter, tracker, bar)
        bar.update(1)
        _after_step(state, run, prompts, tracker)
    bar.close()
    return LoopStats(
        train_loss=last["loss"],
        train_masked_accuracy=last["acc"],
        samples_per_s=meter.samples_per_s,
        data_time_share=meter.data_share,
        loop_s=meter.busy,
    )


def _after_step(state: TrainState, run: DecoderRun, prompts: TokenTextDataset, tracker: tracking.Tracker) -> None:
    """``last.ckpt`` every ``checkpoint_every`` steps, a sample grid every ``sample_every``."""
    params = run.params
    if params.checkpoint_every and state.step % params.checkpoint_every == 0 and state.step < params.steps:
        save_last(state, run)
    if params.sample_every and state.step % params.sample_every == 0 and run.ctx.main:
        path = run.out / "samples" / f"step_{state.step:07d}.png"
        sample_grid(state, run, prompts, path)
        tracker.log_artifact(path, "samples")


# ---------------------------------------------------------------------------------------------
# The end of a run
# ---------------------------------------------------------------------------------------------


def final_metrics(state: TrainState, stats: LoopStats, val: TokenTextDataset, run: DecoderRun) -> dict[str, Any]:
    """Rank 0: the loop's numbers and the validation loss and accuracy (NaN without a val split)."""
    params, ctx = run.params, run.ctx
    amp = autocast_dtype(ctx.device, params.precision)
    return {
        "train_loss": stats.train_loss,
        "train_masked_accuracy": stats.train_masked_accuracy,
        **evaluate(state.model, val, params.batch_size, params.seed, ctx.device, amp),
        "samples_per_s": stats.samples_per_s,
        "data_time_share": stats.data_time_share,
        "steps": state.step,
        "world_size": ctx.world_size,
        "train_loop_s": stats.loop_s,
    }


def log_summary(metrics: dict[str, Any]) -> None:
    log.info(
        "train %.4f / val %.4f loss, val masked accuracy %.3f, %.1f samples/s (data %.1f%% of loop time), "
        "%.0f s in all",
        metrics["train_loss"],
        metrics["val_loss"],
        metrics["val_masked_accuracy"],
        metrics["samples_per_s"],
        100 * metrics["data_time_share"],
        metrics["wall_s"],
    )
