"""Radiograph loading, the paper's VQ-GAN preprocessing, and the pixel-convention conversions.

Pixel conventions (one conversion function per boundary, each tested for its range)::

    JPG / PNG        uint8  [0, 255]      uint8_to_signed / signed_to_uint8
    VQ-GAN, decoder  float  [-1, 1]       signed_to_unit  / unit_to_signed
    display, metrics float  [0, 1]        unit_to_uint8

The preprocessing that produced UniXGen's tokens (mimic-cxr.md section 6): grey -> C channels,
/255, resize the shortest side to R, centre crop R x R, scale to [-1, 1]. No flips, ever: a
horizontally flipped chest X-ray puts the heart on the wrong side.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
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
    x = TF.resize(x, resolution, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    x = TF.center_crop(x, [resolution, resolution])  # (1, R, R)
    x = x.clamp_(0.0, 1.0)  # bilinear antialias stays in range; clamp guards float round-off
    return unit_to_signed(x).expand(channels, -1, -1).contiguous()  # (C, R, R) in [-1, 1]


def image_side(path: str | Path) -> int:
    """The shorter side of an image file in pixels (reads the header only)."""
    with Image.open(path) as img:
        return min(img.size)


def load_preprocessed(path: str | Path, resolution: int, channels: int) -> torch.Tensor:
    """:func:`load_grey` then :func:`preprocess`: (C, R, R) float32 in [-1, 1]."""
    return preprocess(load_grey(path), resolution, channels)


def save_grid(pixels: torch.Tensor, path: str | Path, columns: int) -> None:
    """Write a (N, C, H, W) [0, 1] batch as one PNG grid (row-major, 2-pixel white gutters), atomically."""
    from torchvision.utils import make_grid

    from raygen.io import atomic_path

    grid = make_grid(pixels.float().clamp(0, 1), nrow=columns, padding=2, pad_value=1.0)  # (3|C, H', W')
    array = unit_to_uint8(grid).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
