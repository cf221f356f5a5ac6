"""Generate chest X-rays from text with the trained decoder (a user command, not a pipeline stage).

Command line::

    raygen generate --prompt "Large right pleural effusion." --n 8 --steps 3 --temperature 1.3 \\
        --cfg 1.0 --seed 0 --out grid.png [--progressive fig3.png] [--schedule raygen_paper] \\
        [--checkpoint results/train_decoder/model.ckpt] [--vqgan results/vqgan] [--params params.yaml]

The prompt is encoded by the text encoder configured in the ``embed_text`` section of the params
file (the same encoder that built the training cache), the decoder unmasks the token grid in K
steps (:mod:`raygen.generation.sampler`) and the VQ-GAN turns tokens into pixels. ``--progressive``
writes the paper's Figure 3: the canvas after each step, still-masked tokens shown grey. The same
seed gives the same images. Sampling defaults are :class:`SamplerConfig`'s (paper: K=3, T=1.3,
alpha=0.5); ``--schedule`` picks the decoding loop: ``maskgit`` (MaskGIT-style, the default) or
``raygen_paper`` (the RayGen authors' own loop).
"""

from __future__ import annotations

import argparse
import logging
import math
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from raygen.cli import stage_parser
from raygen.errors import MissingFileError
from raygen.generation.sampler import SamplerConfig, TrainedDecoder, load_decoder_checkpoint, sample_tokens
from raygen.generation.schedule import SCHEDULES
from raygen.io import atomic_path
from raygen.runtime import autocast_dtype, configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Tokens -> pixels -> figures (also used by train_decoder's sample grids)
# ---------------------------------------------------------------------------------------------


def load_vqgan(vqgan_dir: str | Path, device: torch.device) -> Any:
    """The VQ-GAN of ``vqgan_dir`` (config.yaml + model.ckpt), eval mode on ``device``."""
    from raygen.models.vqgan import load_taming  # lazy: heavy, and owned by the vqgan stage

    vqgan_dir = Path(vqgan_dir)
    for name in ("config.yaml", "model.ckpt"):
        if not (vqgan_dir / name).is_file():
            raise MissingFileError(f"{vqgan_dir / name} not found: run the pipeline first (`make demo`)")
    vq = load_taming(vqgan_dir / "config.yaml", vqgan_dir / "model.ckpt")
    return vq.to(device).eval()


@torch.inference_mode()
def tokens_to_images(vq: Any, ids: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Decode (B, N) int64 codebook ids with ``vq.decode_ids`` -> (B, C, R, R) float32 in [-1, 1], CPU."""
    out = [vq.decode_ids(chunk.long()).float().clamp(-1, 1).cpu() for chunk in ids.split(batch_size)]
    return torch.cat(out)


def token_maps(
    ids: torch.Tensor, grid: tuple[int, int], codebook_size: int, mask_id: int | None = None, scale: int = 8
) -> torch.Tensor:
    """A stand-in picture when no VQ-GAN is at hand: ids as grey levels, (B, 1, h*scale, w*scale) in [-1, 1].

    Masked positions (``mask_id``) are 0 (mid grey).
    """
    h, w = grid
    x = ids.float().div(max(codebook_size - 1, 1)).mul(2).sub(1)  # (B, N)
    if mask_id is not None:
        x = x.masked_fill(ids == mask_id, 0.0)
    return F.interpolate(x.view(-1, 1, h, w), scale_factor=scale, mode="nearest")


def masked_canvas(images: torch.Tensor, masked: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Grey out (value 0 in [-1, 1]) the pixel patch of every masked token.

    images: (B, C, R, R) in [-1, 1]; masked: (B, N) bool, True = masked; returns the same shape.
    """
    b, _, height, width = images.shape
    cover = F.interpolate(masked.float().view(b, 1, *grid), size=(height, width), mode="nearest") > 0.5
    return images.masked_fill(cover, 0.0)


def save_image_grid(
    images: torch.Tensor, path: str | Path, titles: list[str] | None = None, ncol: int | None = None
) -> None:
    """Write (B, C, H, W) images in [-1, 1] as a PNG grid, each with its (wrapped) title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raygen.data.images import signed_to_unit

    n = images.shape[0]
    ncol = ncol or min(n, 4)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.9 * nrow), squeeze=False)
    pixels = signed_to_unit(images).mean(dim=1)  # (B, H, W) grey for display
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pixels[i].numpy(), cmap="gray", vmin=0, vmax=1)
            if titles:
                ax.set_title(textwrap.fill(titles[i], 34)[:140], fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def save_progressive(frames: list[torch.Tensor], path: str | Path, titles: list[str]) -> None:
    """The progressive-unmasking figure: rows = prompts, columns = canvases after each step.

    frames: one (B, C, H, W) tensor in [-1, 1] per step, masked patches already grey.
    """
    steps, rows = len(frames), frames[0].shape[0]
    grid = torch.stack(frames, dim=1).flatten(0, 1)  # (B*K, C, H, W), row-major by prompt
    names = [f"step {k + 1}/{steps}" + (f": {titles[r]}" if k == 0 else "") for r in range(rows) for k in range(steps)]
    save_image_grid(grid, path, titles=names, ncol=steps)


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def encode_prompts(
    prompts: list[str],
    params_path: Path,
    profile: str | None,
    model_dir: Path | None,
    text_meta: dict[str, Any],
    device: torch.device,
    cxr_bert_dir: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts with the ``embed_text`` encoder -> states (B, L, D) float16, lengths (B,) int64.

    The one place that touches the text encoder (:func:`raygen.models.text_encoder.build_text_encoder`).
    ``text_meta`` is the training text cache's meta.json (kept in the decoder checkpoint): its
    length L is used, and an encoder or normalisation other than the cache's is an error, since
    the decoder only understands the states it was trained on.
    """
    from raygen.config import load_section
    from raygen.models.text_encoder import build_text_encoder, pick_model_dir
    from raygen.stages.embed_text import EmbedTextParams, forward_precision

    params = load_section(params_path, "embed_text", EmbedTextParams, profile)
    trained = text_meta.get("params", {})
    for key in ("source", "normalize"):
        if key in trained and trained[key] != getattr(params, key):
            raise ValueError(
                f"embed_text.{key} is {getattr(params, key)!r} in {params_path} but the decoder was "
                f"trained on {trained[key]!r} text states; use the params of the training run"
            )
    length = int(text_meta["max_length"])
    encoder = build_text_encoder(
        params.source,
        model_dir=pick_model_dir(params.source, model_dir, cxr_bert_dir),
        hub_id=params.hub_id,
        revision=params.revision,
        max_length=length,
        normalize=params.normalize,
        device=device,
        autocast=autocast_dtype(device, forward_precision(device.type, params.dtype)),
    )
    encoded = encoder.encode(prompts)  # states padded to max_length
    if encoded.truncated.any():
        cut = encoder.token_lengths(prompts) - length  # (B,) tokens beyond L, <= 0 where none
        for i in torch.nonzero(encoded.truncated).flatten().tolist():
            log.warning(
                "prompt %d is %d tokens longer than the decoder's text length %d: its end was cut",
                i,
                int(cut[i]),
                length,
            )
    if encoded.states.shape[-1] != int(text_meta["dim"]):
        raise ValueError(f"text encoder width {encoded.states.shape[-1]} != the decoder's {text_meta['dim']}")
    return encoded.states.to(device=device, dtype=torch.float16), encoded.lengths.to(device)


# ---------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------


def generate_images(
    trained: TrainedDecoder,
    states: torch.Tensor,
    lengths: torch.Tensor,
    config: SamplerConfig,
    seed: int,
    vq: Any | None,
    progressive: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tokens -> images for every prompt row, in batches of ``config.batch_size``.

    Returns images (B, C, R, R) in [-1, 1] and, when ``progressive``, one canvas batch per step
    (masked patches grey). Without a VQ-GAN the images are token maps (:func:`token_maps`).
    """
    model = trained.model
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    amp = autocast_dtype(device, "auto")
    grid, codebook, mask_id = model.config.grid, model.config.codebook_size, model.config.mask_id

    def to_pixels(ids: torch.Tensor) -> torch.Tensor:
        if vq is None:
            return token_maps(ids.cpu(), grid, codebook, mask_id)
        return tokens_to_images(vq, ids.masked_fill(ids == mask_id, 0), config.batch_size)

    images, frames = [], []
    for start in range(0, states.shape[0], config.batch_size):
        end = start + config.batch_size
        out = sample_tokens(
            model,
            states[start:end],
            lengths[start:end],
            config,
            generator,
            trained.null_states,
            trained.null_length,
            amp,
            keep_history=progressive,
        )
        images.append(to_pixels(out.ids))
        if progressive:
            frames.append([masked_canvas(to_pixels(c), (c == mask_id).cpu(), grid) for c in out.history])
    steps = [torch.cat([f[k] for f in frames]) for k in range(config.steps)] if progressive else []
    return torch.cat(images), steps


def build_parser():
    parser = stage_parser("generate", __doc__.split("\n\n")[0])
    parser._option_string_actions["--params"].help = "params file; its 'embed_text' section picks the text encoder"
    parser.add_argument("--prompt", required=True, action="append", help="report text (repeat for several)")
    parser.add_argument("--n", type=int, default=8, help="images per prompt (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    parser.add_argument("--progressive", type=Path, default=None, help="also write the progressive-unmasking figure")
    parser.add_argument("--checkpoint", type=Path, default=Path("results/train_decoder/model.ckpt"))
    parser.add_argument(
        "--vqgan", type=Path, default=Path("results/vqgan"), help="VQ-GAN folder (config.yaml, model.ckpt)"
    )
    parser.add_argument("--text-model", type=Path, default=None, help="local text encoder weights folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    defaults = SamplerConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="K decoding steps (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--no-anneal", action="store_true", help="keep the temperature constant over the steps")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="drop this share of the lowest logits")
    parser.add_argument("--gumbel", type=float, default=defaults.gumbel_scale, help="Gumbel noise on the confidence")
    parser.add_argument("--cfg", type=float, default=defaults.cfg_scale, help="guidance scale (1 = conditional only)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=defaults.schedule,
        help="decoding loop: maskgit = MaskGIT-style (cos((k+1)/K) share left masked after step k, "
        "T down to T/K); raygen_paper = the RayGen authors' loop (linspace(0, 1, K) "
        "schedule, T (K-1-k)/K so the last step is greedy, re-masking by the unfiltered "
        "probability; needs --gumbel 0) (default: %(default)s)",
    )
    return parser


def sampler_config(args: Any) -> SamplerConfig:
    """The :class:`SamplerConfig` the command line asks for."""
    return replace(
        SamplerConfig(),
        steps=args.steps,
        temperature=args.temperature,
        temperature_anneal=not args.no_anneal,
        alpha=args.alpha,
        gumbel_scale=args.gumbel,
        cfg_scale=args.cfg,
        batch_size=args.batch_size,
        schedule=args.schedule,
    )


def checked_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[Any, SamplerConfig]:
    """Parse and validate every argument before a model is loaded; a bad one exits 2 with one line."""
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1 (images per prompt), got {args.n}")
    try:
        config = sampler_config(args)
    except ValueError as err:
        parser.error(str(err).replace("cfg_scale", "--cfg").replace("gumbel_scale", "--gumbel"))
    for flag, path in (("--out", args.out), ("--progressive", args.progressive)):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            parser.error(f"{flag} {path}: must name a PNG file in an existing folder")
    empty = [i for i, p in enumerate(args.prompt) if not p.strip()]
    if empty:
        log.warning("prompt(s) %s are empty: they generate unconditional-looking images", empty)
    return args, config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, config = checked_args(parser, argv)
    setup_logging(args.log)
    device = pick_device(args.device)
    configure_torch(device)
    trained = load_decoder_checkpoint(args.checkpoint, device)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    start = time.perf_counter()
    states, lengths = encode_prompts(
        prompts, args.params, args.profile, args.text_model, trained.config["text_meta"], device
    )
    vq = load_vqgan(args.vqgan, device)
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
