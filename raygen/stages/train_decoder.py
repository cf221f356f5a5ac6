"""Stage ``train_decoder``: train the text-conditioned masked-token decoder on cached tokens and text.

Command line::

    raygen train_decoder --tokens results/tokenize --text results/embed_text \\
        --manifest results/cohort/generator.csv --vqgan results/vqgan \\
        --out results/train_decoder --params params.yaml --log logs/train_decoder.log

Several GPUs (or CPU processes on gloo)::

    torchrun --nproc_per_node 4 -m raygen.stages.train_decoder ...same arguments...

Reads only the memory-mapped caches (no image, no text encoder in the loop). Each step masks
ceil(cos(pi/2 r) * N) tokens per image (r ~ U(0, 1), paper section 3.2), replaces the prompt by
the null prompt for ``cond_dropout`` of the samples (so classifier-free guidance works) and takes
the cross-entropy on the masked positions only. AdamW, linear warm-up then cosine decay, gradient
clipping, bf16 autocast on GPU.

Outputs in ``--out``: ``model.ckpt`` (plain dict: model, optimizer, scheduler, step, config with
the resolved params and both cache metas, the null prompt, RNG states, version), ``metrics.json``
(final train/val loss, val masked accuracy, samples/s, data-time share) and ``samples.png``
(generated images for fixed validation prompts; token maps when no VQ-GAN is given). ``last.ckpt``
is written every ``checkpoint_every`` steps; a killed run started again with the same arguments
resumes from it (same step, optimizer, scheduler, torch RNG states of every rank) and removes it
at the end; the data order needs no stored state, being a pure function of (seed, epoch).
``sample_every > 0`` also writes ``samples/step_*.png`` (logged to MLflow).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import load_checkpoint, save_checkpoint
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.data.token_dataset import (
    StepBatchSampler,
    TokenBatch,
    TokenTextDataset,
    load_null_prompt,
    make_loader,
)
from raygen.generation.sampler import SamplerConfig, TrainedDecoder
from raygen.generation.schedule import sample_train_mask
from raygen.io import write_json
from raygen.models.decoder import (
    DECODER_PRESETS,
    MaskedTokenDecoder,
    count_parameters,
    decoder_config,
)
from raygen.runtime import (
    Dist,
    autocast_dtype,
    configure_torch,
    gather_object,
    run_per_gpu,
    seed_everything,
    setup_rank_logging,
)

log = logging.getLogger(__name__)

STAGE = "train_decoder"
SAMPLE_PROMPTS = 8  # fixed validation prompts in the sample grid


@dataclass(frozen=True)
class TrainDecoderParams:
    """The ``train_decoder`` section of params.yaml (defaults = the demo profile)."""

    preset: str = "demo"  # network shape from DECODER_PRESETS; grid/codebook/text width come from the caches
    steps: int = 300  # optimizer steps; demo: ~6 passes over ~780 training pairs, ~1.5 minutes on 2 cores
    batch_size: int = 16  # global batch (split across processes): demo CPU sweet spot
    lr: float = 1e-3  # AdamW peak learning rate; small transformers tolerate 1e-3 (paper scale: 3e-4)
    weight_decay: float = 0.05  # decoupled decay on matrices only (not norms, biases)
    warmup_steps: int = 30  # linear warm-up (~10% of a short run): Adam's second moments start cold
    grad_clip: float = 1.0  # global gradient-norm clip (MaskGIT / MUSE)
    cond_dropout: float = 0.1  # share of samples trained on the null prompt, enables CFG (MUSE: 10%)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 on GPU, fp32 on CPU (runtime.autocast_dtype)
    compile: bool = False  # torch.compile: worth it on GPU; compile time outweighs a short CPU run
    checkpoint_every: int = 100  # steps between resumable checkpoints (last.ckpt); ~1 minute of demo work
    sample_every: int = 0  # steps between sample grids to MLflow; 0 = only the final samples.png
    sample_schedule: Literal["maskgit", "raygen_paper"] = "maskgit"  # decoding loop of the sample grids
    seed: int = 0  # initialisation, data order, masks and condition dropout
    workers: int = 0  # DataLoader processes; 0 on a 2-core CPU (a memmap gather costs ~0.1 ms)
    device: str = "auto"  # auto = CUDA if present else CPU; under torchrun each rank takes cuda:LOCAL_RANK
    gpus: int = 0  # processes (one per GPU) via torchrun; 0 = every visible GPU, 1 = one; the CPU always uses 1

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError("train_decoder.gpus must be >= 0 (0 = every visible GPU)")
        if self.preset not in DECODER_PRESETS:
            raise ValueError(f"train_decoder.preset {self.preset!r} not in {sorted(DECODER_PRESETS)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("train_decoder.steps and batch_size must be >= 1")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"train_decoder.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("train_decoder.lr and grad_clip must be > 0; weight_decay and warmup_steps >= 0")


# Params that may change between a killed run and its resumption without invalidating it.
_RESUME_FREE = ("checkpoint_every", "sample_every", "sample_schedule", "workers", "device", "compile", "gpus")


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, p: TrainDecoderParams, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (nanoGPT's split)."""
    params = [t for t in model.parameters() if t.requires_grad]
    groups = [
        {"params": [t for t in params if t.dim() >= 2], "weight_decay": p.weight_decay},
        {"params": [t for t in params if t.dim() < 2], "weight_decay": 0.0},
    ]
    # betas as MUSE (0.9, 0.96); fused kernels on CUDA.
    return torch.optim.AdamW(groups, lr=p.lr, betas=(0.9, 0.96), fused=device.type == "cuda")


def lr_factor(step: int, p: TrainDecoderParams) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1 at ``p.steps``."""
    if step < p.warmup_steps:
        return (step + 1) / p.warmup_steps
    progress = min(1.0, (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


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


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def rng_state(generator: torch.Generator, ctx: Dist) -> dict[str, list[torch.Tensor]]:
    """Every rank's torch RNG states as tensors (weights_only-loadable)."""
    local = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if ctx.device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(ctx.device)
    gathered = gather_object(local, ctx)
    return {key: [g[key] for g in gathered] for key in local}


def restore_rng(state: dict[str, list[torch.Tensor]], generator: torch.Generator, ctx: Dist) -> None:
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


def resumable(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it was written by a run with the same settings, else None."""
    if not path.is_file():
        return None
    state = load_checkpoint(path)

    def essential(cfg: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in cfg.get("params", {}).items() if k not in _RESUME_FREE}
        return {**{k: v for k, v in cfg.items() if k != "world_size"}, "params": params}

    if essential(state.get("config", {})) != essential(config):
        log.warning("%s was written with other settings or caches; starting afresh", path)
        return None
    return state


# ---------------------------------------------------------------------------------------------
# Evaluation and samples
# ---------------------------------------------------------------------------------------------


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


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
        with _autocast(device, amp):
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
    from raygen.tools.generate import generate_images, save_image_grid

    rows = np.arange(min(SAMPLE_PROMPTS, len(data)))
    batch = data.gather(rows).to(device)
    trained = TrainedDecoder(model=model, null_states=null[0].to(device), null_length=null[1], config={})
    images, _ = generate_images(
        trained,
        batch.text_states,
        batch.text_lengths,
        SamplerConfig(batch_size=SAMPLE_PROMPTS, schedule=schedule),
        seed,
        vq,
    )
    save_image_grid(images, path, titles=[str(t) for t in data.frame["text"].iloc[rows]])
    model.train()


def load_vqgan_or_none(vqgan_dir: Path | None, device: torch.device) -> Any:
    """The VQ-GAN for sample grids, or None (token maps instead) when no folder was given."""
    if vqgan_dir is None:
        log.info("no --vqgan given: sample grids show token maps")
        return None
    from raygen.tools.generate import load_vqgan

    return load_vqgan(vqgan_dir, device)


# ---------------------------------------------------------------------------------------------
# Training loop
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
class LoopStats:
    """Measured over the training loop (checkpoint and sampling time excluded)."""

    train_loss: float  # mean over the last logging window
    train_masked_accuracy: float
    samples_per_s: float  # global samples / s, first logging window (warm-up, compile) excluded
    data_time_share: float  # share of loop time spent waiting for batches
    loop_s: float


def _on_step_end(step: int) -> None:
    """Called after every optimizer step (a seam for fault-injection tests)."""


def checkpoint_state(state: TrainState, config: dict[str, Any], null: tuple[torch.Tensor, int], ctx: Dist) -> dict:
    """The checkpoint dict; a collective call (every rank's RNG state is gathered)."""
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
        "config": config,
        "null_text": {"states": null[0].cpu(), "length": null[1]},
        "rng": rng_state(state.generator, ctx),
    }


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


def optimizer_step(state: TrainState, p: TrainDecoderParams) -> None:
    """Clip, step optimizer and schedule, clear gradients, count the step."""
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), p.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1


def train_loop(
    state: TrainState,
    forward_model: torch.nn.Module,
    loader: Any,
    null: tuple[torch.Tensor, int],
    p: TrainDecoderParams,
    ctx: Dist,
    tracker: tracking.Tracker,
    on_checkpoint: Any,
    on_sample: Any,
) -> LoopStats:
    """Run steps ``state.step .. p.steps - 1``; logs ~20 times per run (the only device syncs)."""
    amp = autocast_dtype(ctx.device, p.precision)
    log_every = max(1, min(100, p.steps // 20))
    window = torch.zeros(3, device=ctx.device, dtype=torch.float64)  # loss * masked, correct, masked
    last, meter = {"loss": float("nan"), "acc": float("nan")}, LoopMeter()
    state.model.train()
    bar = tqdm(total=p.steps, initial=state.step, desc=STAGE, disable=not ctx.main, mininterval=2.0)
    batches = iter(loader)
    while state.step < p.steps:
        tic = time.perf_counter()
        batch = next(batches).to(ctx.device)
        got = time.perf_counter()
        with _autocast(ctx.device, amp):
            out = masked_loss(forward_model, batch, state.model.config.mask_id, state.generator, null, p.cond_dropout)
        out.loss.backward()
        optimizer_step(state, p)
        window += torch.stack([out.loss.detach().double() * out.masked, out.correct.double(), out.masked.double()])
        _on_step_end(state.step)
        logging_step = state.step % log_every == 0 or state.step == p.steps
        if logging_step:
            if ctx.world_size > 1:
                dist.all_reduce(window)
            loss_masked, correct, masked = window.tolist()  # syncs the device
            window.zero_()
        meter.add(got - tic, time.perf_counter() - tic, len(batch) * ctx.world_size)
        if logging_step:
            last = {"loss": loss_masked / masked, "acc": correct / masked}
            rate = meter.close_window(last=state.step == p.steps)
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
        bar.update(1)
        if p.checkpoint_every and state.step % p.checkpoint_every == 0 and state.step < p.steps:
            on_checkpoint()
        if p.sample_every and state.step % p.sample_every == 0 and ctx.main:
            on_sample(state.step)
    bar.close()
    return LoopStats(
        train_loss=last["loss"],
        train_masked_accuracy=last["acc"],
        samples_per_s=meter.samples_per_s,
        data_time_share=meter.data_share,
        loop_s=meter.busy,
    )


# ---------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokens", type=Path, required=True, help="tokenize stage folder (tokens.npy, index.csv, meta.json)"
    )
    parser.add_argument(
        "--text", type=Path, required=True, help="embed_text stage folder (states.npy, lengths.npy, ...)"
    )
    parser.add_argument("--manifest", type=Path, required=True, help="cohort generator.csv (split train|val)")
    parser.add_argument("--vqgan", type=Path, default=None, help="VQ-GAN folder for sample grids (optional)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_rank_logging(args.log)
    profile, p = load_stage_params(args.params, STAGE, TrainDecoderParams, args.profile)
    return run_per_gpu("raygen.stages.train_decoder", argv, p.gpus, p.device, lambda ctx: _run(args, p, profile, ctx))


def _run(args: Any, p: TrainDecoderParams, profile: str, ctx: Dist) -> int:
    configure_torch(ctx.device)
    started = time.perf_counter()
    train = TokenTextDataset(args.tokens, args.text, args.manifest, "train")
    val = TokenTextDataset(args.tokens, args.text, args.manifest, "val")
    null_states, null_length = load_null_prompt(args.text)
    null = (null_states.to(ctx.device), null_length)
    dec_cfg = decoder_config(p.preset, train.grid, train.codebook_size, train.text_dim)
    config = {
        "params": to_dict(p),
        "profile": profile,
        "decoder": to_dict(dec_cfg),
        "token_meta": train.token_meta,
        "text_meta": train.text_meta,
        "world_size": ctx.world_size,
    }

    torch.manual_seed(p.seed)  # same initial weights on every rank
    model = MaskedTokenDecoder(dec_cfg).to(ctx.device)
    seed_everything(p.seed + ctx.rank)  # dropout differs per rank
    optimizer = make_optimizer(model, p, ctx.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, p))
    generator = torch.Generator(device=ctx.device).manual_seed(p.seed * 100_003 + ctx.rank)
    state = TrainState(model, optimizer, scheduler, generator)
    last_path = args.out / "last.ckpt"
    resumed = None if args.no_resume else resumable(last_path, config)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        restore_rng(resumed["rng"], generator, ctx)
        state.step = int(resumed["step"])
        log.info("resumed from %s at step %d", last_path, state.step)
    log.info(
        "decoder %s: %.2fM parameters, %d tokens, codebook %d, text dim %d; %d processes on %s",
        p.preset,
        count_parameters(model) / 1e6,
        dec_cfg.num_tokens,
        dec_cfg.codebook_size,
        dec_cfg.text_dim,
        ctx.world_size,
        ctx.device,
    )

    forward_model: torch.nn.Module = model
    if ctx.world_size > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if p.compile:
        forward_model = torch.compile(forward_model)
    sampler = StepBatchSampler(len(train), p.batch_size, p.steps, p.seed, state.step, ctx.rank, ctx.world_size)
    loader = make_loader(train, sampler, p.workers, pin_memory=ctx.device.type == "cuda")
    vq = load_vqgan_or_none(args.vqgan, ctx.device) if ctx.main else None

    def on_checkpoint() -> None:
        ckpt = checkpoint_state(state, config, null, ctx)
        if ctx.main:
            save_checkpoint(last_path, ckpt)

    with tracking.start_run(STAGE, profile, params=to_dict(p), enabled=ctx.main) as tracker:

        def on_sample(step: int) -> None:
            path = args.out / "samples" / f"step_{step:07d}.png"
            write_samples(model, val if len(val) else train, null, vq, path, p.seed, ctx.device, p.sample_schedule)
            tracker.log_artifact(path, "samples")

        stats = train_loop(state, forward_model, loader, null, p, ctx, tracker, on_checkpoint, on_sample)
        final = checkpoint_state(state, config, null, ctx)
        if ctx.main:
            _finish(args, p, ctx, state, final, stats, val, val if len(val) else train, null, vq, tracker, started)
    if ctx.world_size > 1:
        dist.barrier()
    return 0


def _finish(
    args: Any,
    p: TrainDecoderParams,
    ctx: Dist,
    state: TrainState,
    final: dict,
    stats: LoopStats,
    val: TokenTextDataset,
    prompts: TokenTextDataset,
    null: tuple[torch.Tensor, int],
    vq: Any,
    tracker: tracking.Tracker,
    started: float,
) -> None:
    """Rank 0: validation metrics (NaN without a val split), samples.png for the first ``prompts``,
    model.ckpt, metrics.json; drop last.ckpt."""
    amp = autocast_dtype(ctx.device, p.precision)
    metrics = {
        "train_loss": stats.train_loss,
        "train_masked_accuracy": stats.train_masked_accuracy,
        **evaluate(state.model, val, p.batch_size, p.seed, ctx.device, amp),
        "samples_per_s": stats.samples_per_s,
        "data_time_share": stats.data_time_share,
        "steps": state.step,
        "world_size": ctx.world_size,
        "train_loop_s": stats.loop_s,
    }
    write_samples(state.model, prompts, null, vq, args.out / "samples.png", p.seed, ctx.device, p.sample_schedule)
    save_checkpoint(args.out / "model.ckpt", final)
    metrics["wall_s"] = time.perf_counter() - started
    write_json(args.out / "metrics.json", metrics)
    (args.out / "last.ckpt").unlink(missing_ok=True)
    tracker.log_metrics({k: float(v) for k, v in metrics.items()}, step=state.step)
    tracker.log_artifact(args.out / "samples.png")
    tracker.log_artifact(args.out / "metrics.json")
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


if __name__ == "__main__":
    raise SystemExit(main())
