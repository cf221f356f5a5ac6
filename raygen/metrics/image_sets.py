"""The image sets the evaluate stage measures, read with unreadable files skipped and counted.

- per-report pairs: every held-out real image and the images generated from its own report (one per
  generation seed), kept only when the real image and every generation of it can be read, with the
  tokenizer's reconstruction of each (a reference; all or none);
- the augmentation set (images generated from class-name prompts);
- the generator's training images (the memorisation reference), streamed for their features so the
  paper profile's tens of thousands of images never sit in memory whole.

Grey files are resized (shortest side) and centre-cropped like the tokenizer's input; synthetic PNGs
already at the synthetic resolution pass through unchanged. Images are (N, 1, S, S) float32 in [0, 1].
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from raygen.data.images import image_side, load_grey, preprocess, signed_to_unit
from raygen.metrics.features import FeatureExtractor
from raygen.metrics.memorisation import Pair, save_pairs_grid

log = logging.getLogger(__name__)

__all__ = [
    "EvaluationImages",
    "load_evaluation_images",
    "load_images",
    "load_images_checked",
    "save_closest_pairs",
    "set_features",
    "streamed_features",
]


@dataclass(frozen=True)
class EvaluationImages:
    """The readable images of every set, at the synthetic images' side ``side`` px.

    per_report: the held-out reports whose real image and every generation could be read (row i);
    real: (N, 1, S, S) the real image of row i; generated[k]: (N, 1, S, S) seed k's image from row i's report;
    augmentation: the readable rows of ``aug_100.csv`` (prompt labels); augmentation_images: their images;
    train_paths: the generator-training image files (all of them until :func:`set_features` drops the
    unreadable); unreadable: skipped files per set; reconstructed: (N, 1, S, S) the VQ-GAN's decoding of
    row i's own tokens, None for a synthesize folder without them.
    """

    side: int
    per_report: pd.DataFrame
    real: torch.Tensor
    generated: list[torch.Tensor]
    augmentation: pd.DataFrame
    augmentation_images: torch.Tensor
    train_paths: list[Path]
    unreadable: dict[str, int]
    reconstructed: torch.Tensor | None = None

    def counts(self) -> dict[str, int]:
        """Images per set (metrics.json ``counts``)."""
        return {
            "real_heldout": len(self.real),
            "per_report_seeds": len(self.generated),
            "augmentation": len(self.augmentation),
            "generator_train": len(self.train_paths),
        }


def load_images_checked(paths: list[Path], resolution: int, workers: int) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 1, R, R) [0, 1] float32 for every path and an (N,) bool mask of the files that could be read;
    unreadable or missing files are logged, counted by the caller and left as zeros. Grey files are
    resized (shortest side) and centre-cropped like the tokenizer's input (synthetic PNGs already at R
    pass through unchanged)."""

    def one(path: Path) -> torch.Tensor | None:
        try:
            return signed_to_unit(preprocess(load_grey(path), resolution, 1))
        except (OSError, ValueError, SyntaxError) as err:  # PIL: missing, truncated or not an image
            log.warning("unreadable image %s (%s): skipped", path, err)
            return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = list(pool.map(one, paths))
    ok = np.array([x is not None for x in loaded], dtype=bool)
    blank = torch.zeros(1, resolution, resolution)
    return (
        torch.stack([x if x is not None else blank for x in loaded])
        if loaded
        else torch.zeros(0, 1, resolution, resolution)
    ), ok


def load_images(paths: list[Path], resolution: int, workers: int) -> torch.Tensor:
    """The readable images of ``paths`` (see :func:`load_images_checked`)."""
    images, ok = load_images_checked(paths, resolution, workers)
    return images[torch.from_numpy(ok)]


def streamed_features(
    extractor: FeatureExtractor, paths: list[Path], resolution: int, workers: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(M, F) features of the readable image files and the (N,) mask of which were readable, loaded
    ``chunk`` at a time: the generator's training set at the paper profile (tens of thousands of
    512-px images) never sits in memory whole."""
    parts, masks = [], []
    for i in tqdm(range(0, len(paths), chunk), desc="reference features", unit="chunk", leave=False):
        images, ok = load_images_checked(paths[i : i + chunk], resolution, workers)
        masks.append(ok)
        if ok.any():
            parts.append(np.asarray(extractor(images[torch.from_numpy(ok)])))
    mask = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    return (np.concatenate(parts) if parts else np.zeros((0, 0))), mask


def load_evaluation_images(
    synthetic: Path, generator: Path, jpg_root: Path, max_train_images: int, seed: int, workers: int
) -> EvaluationImages:
    """The sets from the synthesize folder (``per_report.csv``, ``aug_100.csv``), the cohort's
    ``generator.csv`` (its train split, ``max_train_images`` of it drawn with ``seed`` when 0 < it <
    the split) and the JPG root. Too few readable images to evaluate is a SystemExit."""
    per_report = pd.read_csv(synthetic / "per_report.csv", dtype={"dicom_id": str})
    aug = pd.read_csv(synthetic / "aug_100.csv")
    train = _generator_train(generator, max_train_images, seed)
    side = image_side(synthetic / per_report["path_0"].iloc[0])
    unreadable: dict[str, int] = {}
    per_report, real, gen, recon = _per_report_pairs(per_report, synthetic, jpg_root, side, workers, unreadable)
    aug_images, ok = load_images_checked([synthetic / x for x in aug["path"]], side, workers)
    unreadable["augmentation"] = int((~ok).sum())
    aug, aug_images = aug[ok].reset_index(drop=True), aug_images[torch.from_numpy(ok)]
    if len(real) < 2 or len(aug) < 2:
        raise SystemExit(
            f"too few readable images to evaluate ({len(real)} per-report pairs, {len(aug)} "
            f"augmentation images; unreadable: {unreadable})"
        )
    train_paths = [jpg_root / x for x in train["path"]]
    log.info(
        "images at %d px: %d real held-out, %d x %d per-report, %d augmentation, %d generator-training",
        side,
        len(real),
        len(gen),
        len(gen[0]),
        len(aug_images),
        len(train_paths),
    )
    return EvaluationImages(side, per_report, real, gen, aug, aug_images, train_paths, unreadable, recon)


def _generator_train(generator: Path, max_train_images: int, seed: int) -> pd.DataFrame:
    """The generator's training rows of the cohort's generator.csv, subsampled when asked to."""
    frame = pd.read_csv(generator, dtype={"dicom_id": str})
    train = frame[frame["split"] == "train"]
    if 0 < max_train_images < len(train):
        train = train.sample(max_train_images, random_state=seed)
    return train


def _per_report_pairs(
    per_report: pd.DataFrame, synthetic: Path, jpg_root: Path, side: int, workers: int, unreadable: dict[str, int]
) -> tuple[pd.DataFrame, torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """The rows whose real image and every generation could be read, with those images and their
    reconstructions; counts the rest. The reconstructions are None when the folder has none, or when a
    kept row's is missing (an image the tokenizer had no tokens for): they are a reference, so they never
    drop a pair from the headline numbers, and the tokenizer's measures are then skipped, counted."""
    real, ok = load_images_checked([jpg_root / x for x in per_report["real_path"]], side, workers)
    unreadable["real_heldout"] = int((~ok).sum())
    gen = []
    for k in range(_n_seeds(per_report)):
        images, ok_k = load_images_checked([synthetic / x for x in per_report[f"path_{k}"]], side, workers)
        gen.append(images)
        ok &= ok_k
    unreadable["per_report_pairs_dropped"] = int((~ok).sum())
    keep = torch.from_numpy(ok)
    recon = None
    if "recon_path" in per_report.columns:
        recon, ok_recon = load_images_checked([synthetic / x for x in per_report["recon_path"]], side, workers)
        unreadable["reconstructed"] = int((~ok_recon[ok]).sum())
        if unreadable["reconstructed"]:
            log.warning(
                "%d kept reports have no reconstruction: the tokenizer's measures are skipped",
                unreadable["reconstructed"],
            )
        recon = recon[keep] if not unreadable["reconstructed"] else None
    return per_report[ok].reset_index(drop=True), real[keep], [g[keep] for g in gen], recon


def _n_seeds(per_report: pd.DataFrame) -> int:
    return sum(1 for c in per_report.columns if c.startswith("path_"))


def set_features(
    extractor: FeatureExtractor, images: EvaluationImages, workers: int
) -> tuple[dict[str, np.ndarray], EvaluationImages]:
    """Features of the real held-out (``real``), first-generation (``gen0``), augmentation (``aug``),
    reconstructed (``recon``, when there are reconstructions) and generator-training (``train``) images,
    and ``images`` without the unreadable training files (counted in its ``unreadable``)."""
    sets = [("real", images.real), ("gen0", images.generated[0]), ("aug", images.augmentation_images)]
    sets += [("recon", images.reconstructed)] if images.reconstructed is not None else []
    feats = {name: np.asarray(extractor(x)) for name, x in sets}
    feats["train"], ok = streamed_features(extractor, images.train_paths, images.side, workers)
    unreadable = images.unreadable | {"generator_train": int((~ok).sum())}
    train_paths = [path for path, good in zip(images.train_paths, ok) if good]
    if any(unreadable.values()):
        log.warning("unreadable images skipped: %s", unreadable)
    return feats, replace(images, train_paths=train_paths, unreadable=unreadable)


def save_closest_pairs(images: EvaluationImages, pairs: tuple[Pair, ...], path: Path) -> None:
    """The memorisation check's closest pairs side by side; synthetic index i counts the first
    generations, then the augmentation images (the order their features were searched in)."""
    synthetic = torch.cat([images.generated[0], images.augmentation_images])
    save_pairs_grid(
        pairs,
        lambda i: synthetic[i],
        lambda i: load_images([images.train_paths[i]], images.side, 1)[0],
        path,
    )
