"""Benchmark the masked-token decoder: training samples/s, data loading, generation images/s.

    python bench/bench_decoder.py                       # demo preset on this machine (CPU or GPU)
    python bench/bench_decoder.py --preset paper        # on a GPU: bf16, compiled, batch 128, K=8 batch 64
    python bench/bench_decoder.py --vqgan results/vqgan # time VQ decode with the real VQ-GAN

What is timed is the stage's own code path: ``raygen.generation.objective.masked_loss`` (cosine masks,
condition dropout, only masked positions through the head) + backward + clipping + AdamW, and
``raygen.generation.sampler.sample_tokens`` (text K/V once, K steps, optional CFG). Inputs are
synthetic tensors of the caches' shapes; the data-loading number uses synthetic memory-mapped caches
of the demo size written with ``tests/synthetic_caches.py``'s ``write_synthetic_caches``. On CUDA
every timing is bracketed by ``torch.cuda.synchronize()``. Prints one JSON object (and writes it
with ``--out``). Targets on one H100/H200 for the paper preset: >= 600 train samples/s, >= 250
token-generation images/s at K=8, batch 64 (the speed references in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic_caches import write_synthetic_caches  # noqa: E402

from bench.report import emit  # noqa: E402
from raygen.data.token_dataset import StepBatchSampler, TokenBatch, TokenTextDataset, make_loader  # noqa: E402
from raygen.generation.objective import masked_loss  # noqa: E402
from raygen.generation.sampler import SamplerConfig, sample_tokens  # noqa: E402
from raygen.models.decoder import MaskedTokenDecoder, count_parameters, decoder_config  # noqa: E402
from raygen.runtime import autocast_dtype, configure_torch, pick_device  # noqa: E402
from raygen.stages.train_decoder import TrainDecoderParams  # noqa: E402
from raygen.training.decoder import make_optimizer  # noqa: E402

# Cache shapes per preset: (grid side, codebook, text length L, text width D).
SHAPES = {"smoke": (4, 32, 8, 16), "demo": (16, 512, 96, 384), "paper": (32, 1024, 256, 768)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(
    batch: int, n_tokens: int, codebook: int, length: int, dim: int, device: torch.device, seed: int = 0
) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    return TokenBatch(
        ids=torch.randint(0, codebook, (batch, n_tokens), generator=g),
        text_states=torch.randn(batch, length, dim, generator=g).half(),
        text_lengths=torch.randint(length // 4, length + 1, (batch,), generator=g),
    ).to(device)


def bench_train(model: MaskedTokenDecoder, batch: TokenBatch, null: tuple[torch.Tensor, int], args, device) -> dict:
    """Training samples/s of the stage's step (forward, masked loss, backward, clip, AdamW)."""
    params = TrainDecoderParams(
        preset=args.preset, batch_size=len(batch), precision=args.precision, compile=args.compile
    )
    model.train()
    optimizer = make_optimizer(model, params, device)
    forward = torch.compile(model) if args.compile else model
    amp = autocast_dtype(device, args.precision)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        ctx = torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False)
        with ctx:
            out = masked_loss(forward, batch, model.config.mask_id, generator, null, params.cond_dropout)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(args.warmup):  # includes compilation (masked counts vary: dynamic shapes settle)
        step()
    sync(device)
    warm = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / args.iters
    cpu = (time.process_time() - c0) / args.iters
    out = {
        "train_batch": len(batch),
        "train_step_ms": 1000 * dt,
        "train_samples_per_s": len(batch) / dt,
        "train_warmup_s": warm,
    }
    if device.type == "cpu":  # a shared CPU inflates wall time; CPU seconds show the work itself
        out["train_samples_per_cpu_s"] = len(batch) / cpu
    return out


def bench_generate(
    model: MaskedTokenDecoder, batch: TokenBatch, null: tuple[torch.Tensor, int], args, device, vq=None
) -> dict:
    """Token-generation images/s (K steps, text K/V once), and with VQ decode when ``vq`` is given."""
    model.eval()
    if args.compile:
        # Generation shapes are static (B, N and the text context never change): compile the
        # per-step decode once; the text K/V (encode_text) runs once per batch anyway.
        model.decode = torch.compile(model.decode, dynamic=False)
    amp = autocast_dtype(device, args.precision)
    config = SamplerConfig(steps=args.gen_steps, cfg_scale=args.cfg, batch_size=len(batch))

    def run() -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(0)
        return sample_tokens(model, batch.text_states, batch.text_lengths, config, g, null[0], null[1], amp).ids

    for _ in range(max(1, args.warmup // 2)):
        ids = run()
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.gen_iters):
        ids = run()
    sync(device)
    dt = (time.perf_counter() - t0) / args.gen_iters
    cpu = (time.process_time() - c0) / args.gen_iters
    out = {
        "gen_batch": len(batch),
        "gen_steps": args.gen_steps,
        "gen_cfg": args.cfg,
        "gen_tokens_images_per_s": len(batch) / dt,
    }
    if device.type == "cpu":
        out["gen_tokens_images_per_cpu_s"] = len(batch) / cpu
    if vq is not None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False),
        ):
            vq.decode_ids(ids)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.gen_iters):
                vq.decode_ids(ids)
            sync(device)
        vq_dt = (time.perf_counter() - t0) / args.gen_iters
        out["vq_decode_images_per_s"] = len(batch) / vq_dt
        out["gen_with_vq_images_per_s"] = len(batch) / (dt + vq_dt)
    return out


def bench_data(args, length: int, dim: int, grid: int, codebook: int) -> dict:
    """Batches/s of the stage's loader over synthetic memmapped caches (2,000 pairs)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokens, text, manifest = write_synthetic_caches(tmp, args.data_items, (grid, grid), codebook, length, dim)
        data = TokenTextDataset(tokens, text, manifest, "train")
        steps = 200
        sampler = StepBatchSampler(len(data), args.batch, steps, seed=0)
        loader = make_loader(data, sampler, workers=0, pin_memory=False)
        t0 = time.perf_counter()
        n = sum(len(b) for b in loader)
        dt = time.perf_counter() - t0
    return {"data_samples_per_s": n / dt, "data_ms_per_batch": 1000 * dt / steps}


def stand_in_vqgan(preset: str, grid: int, device: torch.device):
    """params.yaml's ``vqgan`` architecture of the ``preset`` profile (demo or paper), at the resolution
    that gives the bench's ``grid`` tokens a side; random weights, for timing only (None for smoke)."""
    import dataclasses

    from raygen.config import load_section
    from raygen.models.vqgan import build_vqgan
    from raygen.stages.vqgan import VqganParams

    if preset not in ("demo", "paper"):
        return None
    params = load_section(Path(__file__).resolve().parents[1] / "params.yaml", "vqgan", VqganParams, preset)
    config = dataclasses.replace(params.model_config(), resolution=grid * params.model_config().factor)
    return build_vqgan(config).eval().requires_grad_(False).to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(SHAPES), default=None, help="default: paper on CUDA, else demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="train batch (default: 128 paper, 16 demo)")
    parser.add_argument("--gen-batch", type=int, default=None, help="generation batch (default: 64 paper, 16 demo)")
    parser.add_argument("--gen-steps", type=int, default=8, help="K decoding steps (default: %(default)s)")
    parser.add_argument("--cfg", type=float, default=1.0, help="guidance scale; != 1 doubles the decoder batch")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training forward and the generation decode (default: on for CUDA)",
    )
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--gen-iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vqgan", type=Path, default=None, help="VQ-GAN folder; default: a random stand-in")
    parser.add_argument("--no-vq", action="store_true", help="skip the VQ decode timing")
    parser.add_argument("--data-items", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    configure_torch(device, args.threads)
    args.preset = args.preset or ("paper" if gpu else "demo")
    args.batch = args.batch or (128 if gpu else 16)
    args.gen_batch = args.gen_batch or (64 if gpu else 16)
    args.compile = gpu if args.compile is None else args.compile
    args.iters = args.iters or (30 if gpu else 5)
    args.gen_iters = args.gen_iters or (10 if gpu else 2)
    args.warmup = args.warmup or (15 if gpu else 2)
    grid, codebook, length, dim = SHAPES[args.preset]

    torch.manual_seed(0)
    model = MaskedTokenDecoder(decoder_config(args.preset, (grid, grid), codebook, dim)).to(device)
    null = (torch.zeros(length, dim, dtype=torch.float16, device=device), 2)
    result = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu x{torch.get_num_threads()} threads",
        "preset": args.preset,
        "params_m": count_parameters(model) / 1e6,
        "precision": args.precision,
        "compile": args.compile,
        "tokens": grid * grid,
        "codebook": codebook,
        "text": [length, dim],
    }
    result.update(
        bench_train(model, synthetic_batch(args.batch, grid * grid, codebook, length, dim, device), null, args, device)
    )
    if gpu:
        result["train_peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    vq = None
    if not args.no_vq:
        if args.vqgan is not None:
            from raygen.generation.render import load_vqgan

            vq = load_vqgan(args.vqgan, device, token_meta=None)  # decodes a random network's ids
        else:
            vq = stand_in_vqgan(args.preset, grid, device)
            result["vq"] = "random stand-in of the preset's VQ-GAN architecture" if vq is not None else "none"
    result.update(
        bench_generate(
            model,
            synthetic_batch(args.gen_batch, grid * grid, codebook, length, dim, device, seed=1),
            null,
            args,
            device,
            vq,
        )
    )
    result.update(bench_data(args, length, dim, grid, codebook))
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
