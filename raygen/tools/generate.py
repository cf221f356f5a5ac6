"""Generate chest X-rays from text with the trained decoder (a user command, not a pipeline stage).

Command line::

    raygen generate --prompt "Large right pleural effusion." --n 8 --steps 3 --temperature 1.3 \\
        --cfg 1.0 --seed 0 --out grid.png [--progressive fig3.png] [--schedule raygen_paper] \\
        [--checkpoint results/train_decoder/model.ckpt] [--vqgan results/vqgan] [--params params.yaml]

The prompt is encoded by the text encoder configured in the ``embed_text`` section of the params
file (the same encoder that built the training cache), the decoder unmasks the token grid in K
steps (:mod:`raygen.generation.sampler`) and the VQ-GAN turns tokens into pixels. ``--progressive``
writes the paper's Figure 3: the canvas after each step, still-masked tokens shown grey. The same
seed gives the same images. Sampling follows the ``synthesize`` section of the params file's profile,
so the images look like the ones the pipeline evaluated (the demo guides with cfg 3; the paper profile
decodes with the authors' loop, ``raygen_paper``, unguided); each sampling flag given overrides its
setting. ``--schedule`` picks the decoding loop: ``maskgit`` (MaskGIT-style) or ``raygen_paper``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from raygen.cli import stage_parser
from raygen.config import load_section
from raygen.errors import UsageError
from raygen.generation.prompts import encode_prompts
from raygen.generation.render import generate_images, load_vqgan, save_image_grid, save_progressive
from raygen.generation.sampler import CFG_SCHEDULES, SamplerConfig, load_decoder_checkpoint
from raygen.generation.schedule import SCHEDULES
from raygen.runtime import configure_torch, pick_device, setup_logging
from raygen.stages.embed_text import EmbedTextParams  # the params section that chose the text encoder
from raygen.stages.synthesize import SynthesizeParams  # the params section the pipeline sampled with

log = logging.getLogger(__name__)


def build_parser():
    parser = stage_parser("generate", __doc__.split("\n\n")[0])
    sections = "its 'embed_text' section picks the text encoder, its 'synthesize' section the sampling"
    parser._option_string_actions["--params"].help = f"params file; {sections}"
    parser.add_argument("--prompt", required=True, action="append", help="report text (repeat for several)")
    parser.add_argument("--n", type=int, default=8, help="images per prompt (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    parser.add_argument("--progressive", type=Path, default=None, help="also write the progressive-unmasking figure")
    parser.add_argument("--checkpoint", type=Path, default=Path("results/train_decoder/model.ckpt"))
    parser.add_argument(
        "--vqgan",
        type=Path,
        default=Path("results/vqgan"),
        help="VQ-GAN folder (config.yaml, model.ckpt): the one that made the decoder's tokens (checked by hash)",
    )
    parser.add_argument("--text-model", type=Path, default=None, help="local text encoder weights folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    # Sampling flags default to None: what is not given comes from the params' synthesize section.
    section = "(default: the params' synthesize section)"
    parser.add_argument("--steps", type=int, help=f"K decoding steps {section}")
    parser.add_argument("--temperature", type=float, help=f"sampling temperature T {section}")
    parser.add_argument("--no-anneal", action="store_true", help="keep the temperature constant over the steps")
    parser.add_argument("--alpha", type=float, help=f"drop this share of the lowest logits {section}")
    parser.add_argument("--gumbel", type=float, help=f"Gumbel noise on the confidence {section}")
    parser.add_argument("--cfg", type=float, help=f"guidance scale, 1 = conditional only {section}")
    parser.add_argument(
        "--cfg-schedule",
        choices=CFG_SCHEDULES,
        help="how the guidance scale runs over the steps: constant = --cfg at every step; linear = from 1 "
        f"at the first step up to --cfg at the last, which keeps more variety between samples {section}",
    )
    parser.add_argument("--batch-size", type=int, help=f"prompts decoded together {section}")
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="decoding loop: maskgit = MaskGIT-style (cos((k+1)/K) share left masked after step k, "
        "T down to T/K); raygen_paper = the RayGen authors' loop (linspace(0, 1, K) "
        "schedule, T (K-1-k)/K so the last step is greedy, re-masking by the unfiltered "
        f"probability; needs --gumbel 0) {section}",
    )
    return parser


def sampler_config(args: Any, base: SamplerConfig) -> SamplerConfig:
    """``base`` with every sampling flag the command line gave in its place."""
    given = {
        "steps": args.steps,
        "temperature": args.temperature,
        "alpha": args.alpha,
        "gumbel_scale": args.gumbel,
        "cfg_scale": args.cfg,
        "batch_size": args.batch_size,
        "schedule": args.schedule,
        "cfg_schedule": args.cfg_schedule,
    }
    if args.no_anneal:
        given["temperature_anneal"] = False
    return replace(base, **{name: value for name, value in given.items() if value is not None})


def flag_names(err: ValueError) -> str:
    """A :class:`SamplerConfig` error in the command line's words."""
    return str(err).replace("cfg_scale", "--cfg").replace("gumbel_scale", "--gumbel")


def profile_sampler_config(args: Any) -> SamplerConfig:
    """The sampling of the params profile's ``synthesize`` section, with the command line's flags on top."""
    base = load_section(args.params, "synthesize", SynthesizeParams, args.profile).sampler()
    try:
        return sampler_config(args, base)
    except ValueError as err:  # a flag that contradicts the section, e.g. --gumbel 4.5 with schedule raygen_paper
        section = f"{args.params}'s synthesize section"
        raise UsageError(f"{flag_names(err)} (the other settings come from {section})") from err


def checked_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> Any:
    """Parse and validate every argument before a model is loaded; a bad one exits 2 with one line."""
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1 (images per prompt), got {args.n}")
    try:  # the flags alone, before the params file or any model is read
        sampler_config(args, SamplerConfig())
    except ValueError as err:
        parser.error(flag_names(err))
    for flag, path in (("--out", args.out), ("--progressive", args.progressive)):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            parser.error(f"{flag} {path}: must name a PNG file in an existing folder")
    empty = [i for i, p in enumerate(args.prompt) if not p.strip()]
    if empty:
        log.warning("prompt(s) %s are empty: they generate unconditional-looking images", empty)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = checked_args(parser, argv)
    setup_logging(args.log)
    device = pick_device(args.device)
    configure_torch(device)
    trained = load_decoder_checkpoint(args.checkpoint, device)
    config = profile_sampler_config(args)
    vq = load_vqgan(args.vqgan, device, token_meta=trained.token_meta)  # checked before the text model loads
    prompts = [p for p in args.prompt for _ in range(args.n)]
    start = time.perf_counter()
    text_params = load_section(args.params, "embed_text", EmbedTextParams, args.profile)
    states, lengths = encode_prompts(
        prompts, text_params, args.params, args.text_model, trained.config["text_meta"], device
    )
    images, frames = generate_images(trained, states, lengths, config, args.seed, vq, args.progressive is not None)
    save_image_grid(images, args.out, titles=prompts, ncol=min(args.n, 8))
    log.info("wrote %s: %d images (%s) in %.1f s", args.out, len(prompts), config, time.perf_counter() - start)
    if args.progressive is not None:
        rows = list(range(0, len(prompts), args.n))[:4] if len(args.prompt) > 1 else list(range(min(4, len(prompts))))
        save_progressive([f[rows] for f in frames], args.progressive, [prompts[r] for r in rows])
        log.info("wrote %s (%d steps)", args.progressive, config.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
