"""Token grids to pictures: VQ-GAN decoding, image grids and the progressive-unmasking figure.

:func:`generate_images` runs the sampler over prompt rows and decodes its token grids with the
VQ-GAN (:func:`load_vqgan`), or shows them as grey-level token maps when no VQ-GAN is at hand.
Used by ``raygen generate``, the ``synthesize`` stage and ``train_decoder``'s sample grids.
"""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from raygen.errors import MismatchedInputsError, MissingFileError
from raygen.generation.sampler import SamplerConfig, TrainedDecoder, sample_tokens
from raygen.io import atomic_path, sha256_file
from raygen.runtime import autocast_dtype

log = logging.getLogger(__name__)


def load_vqgan(vqgan_dir: str | Path, device: torch.device, *, token_meta: dict[str, Any] | None) -> Any:
    """The VQ-GAN of ``vqgan_dir`` (config.yaml + model.ckpt), eval mode on ``device``.

    ``token_meta``: the meta.json of the tokens whose ids this VQ-GAN will decode (a decoder checkpoint
    keeps it as ``config["token_meta"]``); the folder must hold the VQ-GAN that made them
    (:func:`check_vqgan_made_the_tokens`). None only where no such tokens exist (the caller encodes its
    own, or decodes a random network's ids).
    """
    from raygen.models.vqgan import load_taming  # lazy: heavy, and owned by the vqgan stage

    vqgan_dir = Path(vqgan_dir)
    for name in ("config.yaml", "model.ckpt"):
        if not (vqgan_dir / name).is_file():
            raise MissingFileError(f"{vqgan_dir / name} not found: run the pipeline first (`make demo`)")
    if token_meta is not None:
        check_vqgan_made_the_tokens(vqgan_dir, token_meta)
    vq = load_taming(vqgan_dir / "config.yaml", vqgan_dir / "model.ckpt")
    return vq.to(device).eval()


def check_vqgan_made_the_tokens(vqgan_dir: Path, token_meta: dict[str, Any]) -> None:
    """Refuse to decode a decoder's ids with a VQ-GAN other than the one that made its training tokens.

    Another codebook turns the same ids into other pictures without any error, so a decoder and a
    VQ-GAN folder that do not belong together (a VQ-GAN retrained or replaced after ``train_decoder``
    ran, or ``--vqgan`` pointing at another run) would give wrong images silently. The tokenize stage
    records the checkpoint's SHA-256 in the token cache's meta.json, which the decoder's checkpoint keeps.
    """
    made = token_meta.get("vqgan") or {}
    expected = made.get("checkpoint_sha256")
    if not expected:
        log.warning("the decoder's checkpoint does not record which VQ-GAN made its tokens: %s not checked", vqgan_dir)
        return
    found = sha256_file(vqgan_dir / "model.ckpt")
    if found != expected:
        raise MismatchedInputsError(
            f"{vqgan_dir / 'model.ckpt'} (sha256 {found[:12]}) is not the VQ-GAN whose tokens the decoder learned "
            f"({made.get('checkpoint')}, sha256 {expected[:12]}): its codebook would draw other pictures. Give the "
            "VQ-GAN folder the tokens came from, or rerun the pipeline so that tokenize and train_decoder follow "
            "the new VQ-GAN"
        )


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


def generate_images(
    trained: TrainedDecoder,
    states: torch.Tensor,
    lengths: torch.Tensor,
    config: SamplerConfig,
    seed: int,
    vq: Any | None,
    progressive: bool = False,
    precision: str = "auto",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tokens -> images for every prompt row, in batches of ``config.batch_size``, sampled at ``precision``.

    Returns images (B, C, R, R) in [-1, 1] and, when ``progressive``, one canvas batch per step
    (masked patches grey). Without a VQ-GAN the images are token maps (:func:`token_maps`).
    """
    model = trained.model
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    amp = autocast_dtype(device, precision)
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
