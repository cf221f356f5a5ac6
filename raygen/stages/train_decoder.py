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

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.io import write_json
from raygen.models.decoder_presets import DECODER_PRESETS
from raygen.runtime import Dist, barrier, configure_torch, run_per_gpu, setup_rank_logging

log = logging.getLogger(__name__)

STAGE = "train_decoder"


@dataclass(frozen=True)
class TrainDecoderParams:
    """The ``train_decoder`` section of params.yaml (defaults = the demo profile)."""

    preset: str = "demo"  # network shape from DECODER_PRESETS; grid/codebook/text width come from the caches
    # demo: start from the pinned pre-trained decoder (--demo-weights); the demo profile sets it, the default
    # is scratch so that a decoder of any shape trains without the demo's files
    init: Literal["scratch", "demo"] = "scratch"
    steps: int = 500  # optimizer steps
    batch_size: int = 16  # global batch (split across processes): demo CPU sweet spot
    lr: float = 1e-3  # AdamW peak learning rate; small transformers tolerate 1e-3 (paper scale: 3e-4)
    weight_decay: float = 0.05  # decoupled decay on matrices only (not norms, biases)
    warmup_steps: int = 50  # linear warm-up (~10% of a short run): Adam's second moments start cold
    grad_clip: float = 1.0  # global gradient-norm clip (MaskGIT / MUSE)
    cond_dropout: float = 0.1  # share of samples trained on the null prompt, enables CFG (MUSE: 10%)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 on GPU, fp32 on CPU (runtime.autocast_dtype)
    compile: bool = False  # torch.compile: worth it on GPU; compile time outweighs a short CPU run
    checkpoint_every: int = 100  # steps between resumable checkpoints (last.ckpt)
    sample_every: int = 0  # steps between sample grids to MLflow; 0 = only the final samples.png
    sample_schedule: Literal["maskgit", "raygen_paper"] = "maskgit"  # decoding loop of the sample grids
    seed: int = 0  # initialisation, data order, masks and condition dropout
    workers: int = 0  # DataLoader processes; 0 loads in the training process (a memmap gather is cheap)
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
    parser.add_argument(
        "--demo-weights", type=Path, default=None, help="the demo's pinned parts (weights/demo; init: demo only)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_rank_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, TrainDecoderParams, args.profile)
    return run_per_gpu(
        "raygen.stages.train_decoder", argv, params.gpus, params.device, lambda ctx: _run(args, params, profile, ctx)
    )


def _run(args: Any, params: TrainDecoderParams, profile: str, ctx: Dist) -> int:
    """One process's share of the run (rank 0 writes the outputs)."""
    from raygen.checkpoint import save_checkpoint
    from raygen.data.token_dataset import StepBatchSampler, TokenTextDataset, load_null_prompt, make_loader
    from raygen.models.decoder import decoder_config
    from raygen.training import decoder as training

    configure_torch(ctx.device)
    started = time.perf_counter()
    train = TokenTextDataset(args.tokens, args.text, args.manifest, "train")
    val = TokenTextDataset(args.tokens, args.text, args.manifest, "val")
    null_states, null_length = load_null_prompt(args.text)
    null = (null_states.to(ctx.device), null_length)
    decoder = decoder_config(params.preset, train.grid, train.codebook_size, train.text_dim)
    config = training.run_config(params, profile, decoder, train, ctx)
    state = training.new_state(params, decoder, ctx)
    if params.init == "demo":
        training.start_from_pinned(state, args.demo_weights, args.vqgan, train.text_meta)
    if not args.no_resume:
        training.resume(state, args.out / "last.ckpt", config, ctx)
    training.log_model(state.model, params, ctx)
    forward = training.forward_model(state.model, params, ctx)
    sampler = StepBatchSampler(
        len(train), params.batch_size, params.steps, params.seed, state.step, ctx.rank, ctx.world_size
    )
    loader = make_loader(train, sampler, params.workers, pin_memory=ctx.device.type == "cuda")
    vq = training.load_vqgan_or_none(args.vqgan, ctx.device, train.token_meta) if ctx.main else None
    run = training.DecoderRun(params=params, ctx=ctx, config=config, null=null, out=args.out, vq=vq)
    prompts = val if len(val) else train
    with tracking.start_run(
        STAGE, profile, params=to_dict(params), params_file=args.params, enabled=ctx.main
    ) as tracker:
        stats = training.train_loop(state, forward, loader, run, prompts, tracker)
        final = training.checkpoint_state(state, run)
        if ctx.main:
            metrics = training.final_metrics(state, stats, val, run)
            training.sample_grid(state, run, prompts, args.out / "samples.png")
            save_checkpoint(args.out / "model.ckpt", final)
            metrics["wall_s"] = time.perf_counter() - started
            _write_outputs(args.out, metrics, tracker, state.step)
    barrier(ctx)
    return 0


def _write_outputs(out: Path, metrics: dict[str, Any], tracker: tracking.Tracker, step: int) -> None:
    """metrics.json, MLflow; the finished run no longer needs last.ckpt."""
    from raygen.training.decoder import log_summary

    write_json(out / "metrics.json", metrics)
    (out / "last.ckpt").unlink(missing_ok=True)
    tracker.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
    tracker.log_artifact(out / "samples.png")
    tracker.log_artifact(out / "metrics.json")
    log_summary(metrics)


if __name__ == "__main__":
    raise SystemExit(main())
