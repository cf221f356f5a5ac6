"""Radiograph loading, the paper's VQ-GAN preprocessing, and the pixel-convention conversions.

Pixel conventions (one conversion function per boundary, each tested for its range)::

    JPG / PNG        uint8  [0, 255]      uint8_to_signed / signed_to_uint8
    VQ-GAN, decoder  float  [-1, 1]       signed_to_unit  / unit_to_signed
    display, metrics float  [0, 1]        unit_to_uint8

The preprocessing that produced UniXGen's tokens (docs/mimic-cxr.md section 6): grey -> C channels,
/255, resize the shortest side to R, centre crop R x R, scale to [-1, 1]. No flips, ever: a
horizontally flipped chest X-ray puts the heart on the wrong side.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Pixel conventions


def uint8_to_signed(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] (any shape) -> float32 [-1, 1] (same shape): ``x / 255 * 2 - 1``."""
    x = torch.as_tensor(np.asarray(pixels) if isinstance(pixels, np.ndarray) else pixels)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    return x.to(torch.float32).div(255.0).mul(2.0).sub(1.0)


def signed_to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (generator / VQ-GAN output) -> [0, 1], clamped (decoders overshoot a little)."""
    return x.float().add(1.0).div(2.0).clamp(0.0, 1.0)


def unit_to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> [-1, 1] floats (values outside [0, 1] are clamped first)."""
    return x.float().clamp(0.0, 1.0).mul(2.0).sub(1.0)


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 [0, 255], rounded to nearest and clamped."""
    return x.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def signed_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255] (through the display convention)."""
    return unit_to_uint8(signed_to_unit(x))


# --------------------------------------------------------------------------------------------
# Loading and preprocessing


def load_grey(path: str | Path) -> Image.Image:
    """Read an image file as 8-bit greyscale (PIL mode ``L``); raises on unreadable files.

    MIMIC-CXR-JPG files are already 8-bit grey; RGB or 16-bit files are converted by PIL.
    ``Image.load()`` forces the full decode here, so truncated files fail now, not later.
    """
    with Image.open(path) as img:
        img.load()
        return img.convert("L") if img.mode != "L" else img.copy()


def preprocess(image: Image.Image | np.ndarray, resolution: int, channels: int) -> torch.Tensor:
    """The paper's tokenizer preprocessing: one grey image -> (C, R, R) float32 in [-1, 1].

    Steps, in the order UniXGen used: grey -> ``channels`` copies; /255 (to [0, 1] floats);
    resize so the shortest side is ``resolution`` (bilinear with antialiasing, on floats, so no
    8-bit rounding after the resize); centre crop ``resolution`` x ``resolution``; ``x * 2 - 1``.
    No flips.

    Args:
        image: PIL greyscale image or a (H, W) uint8 array.
        resolution: output side R in pixels.
        channels: 1 for RayGen's own grey VQ-GAN, 3 for UniXGen's (RGB-trained) model.
    """
    grey = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image)
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise ValueError(f"expected a (H, W) uint8 image, got {grey.dtype} {grey.shape}")
    x = torch.from_numpy(grey.copy()).to(torch.float32).div_(255.0)[None]  # (1, H, W) in [0, 1]
    x = center_crop(resize_short_side(x, resolution), resolution)  # (1, R, R)
    x = x.clamp_(0.0, 1.0)  # bilinear antialias stays in range; clamp guards float round-off
    return unit_to_signed(x).expand(channels, -1, -1).contiguous()  # (C, R, R) in [-1, 1]


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) float -> shortest side ``size``, bilinear with antialiasing: torchvision's
    ``resize(x, size, BILINEAR, antialias=True)`` on tensors, without importing torchvision (slow to import)."""
    h, w = x.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return x
    new_long = int(size * long / short)
    out = (size, new_long) if h <= w else (new_long, size)
    return F.interpolate(x[None], size=out, mode="bilinear", align_corners=False, antialias=True)[0]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of (C, H, W), as torchvision's ``center_crop`` (no padding)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size} px from a {h}x{w} image")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def image_side(path: str | Path) -> int:
    """The shorter side of an image file in pixels (reads the header only)."""
    with Image.open(path) as img:
        return min(img.size)


def load_preprocessed(path: str | Path, resolution: int, channels: int) -> torch.Tensor:
    """:func:`load_grey` then :func:`preprocess`: (C, R, R) float32 in [-1, 1]."""
    return preprocess(load_grey(path), resolution, channels)


def tile(pixels: torch.Tensor, columns: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) -> one (C, H', W') image, row-major with ``padding``-px gutters of ``pad_value``
    (the layout of torchvision's ``make_grid``, whose import alone would slow every stage down)."""
    n, c, h, w = pixels.shape
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    grid = pixels.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = pixels[i]
    return grid


def save_grid(pixels: torch.Tensor, path: str | Path, columns: int) -> None:
    """Write a (N, C, H, W) [0, 1] batch as one PNG grid (row-major, 2-pixel white gutters), atomically."""
    from raygen.io import atomic_path

    grid = tile(pixels.float().clamp(0, 1), columns)  # (C, H', W')
    array = unit_to_uint8(grid).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_png(pixels: torch.Tensor, path: Path) -> None:
    """(C, R, R) [-1, 1] -> 8-bit grey PNG (channel mean), written via a temporary name."""
    array = signed_to_uint8(pixels.float().mean(0, keepdim=True))[0].numpy()
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array, mode="L").save(tmp, format="PNG")
    tmp.replace(path)


def load_pngs(paths: list[Path]) -> torch.Tensor:
    """(N, 1, R, R) [0, 1] float32 from grey PNGs."""
    return torch.stack([torch.from_numpy(np.asarray(load_grey(p), dtype=np.float32) / 255.0)[None] for p in paths])
