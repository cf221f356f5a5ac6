"""Synthetic pre-training for an augmented arm (``train_classifier.synthetic_use: pretrain``).

The paper mixes real and synthetic images in one training set (``synthetic_use: mixed``). Pre-training
instead trains the network on the arm's synthetic images alone for ``pretrain_epochs`` passes (its own
AdamW and warm-up + cosine schedule, from the same seeded initial weights as the real arm), then runs
the real arm's recipe unchanged from those weights on the real training images only. The arm then
differs from the real arm in its starting point alone, and its best epoch is chosen on the real
validation images after real training, so synthetic images that look unlike real ones cannot be the
last thing the network learned.

``pretrained.ckpt`` in the output folder holds the phase's weights with the run's config until the run
ends: a killed run started again with the same config skips the phase (the real phase resumes from
``last.ckpt`` as usual).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raygen.checkpoint import save_checkpoint
from raygen.data.classifier_data import ClassifierImages
from raygen.training import classifier as training
from raygen.training.scaffolding import essential_config, resumable

if TYPE_CHECKING:
    from raygen.stages.train_classifier import TrainClassifierParams

log = logging.getLogger(__name__)

PRETRAINED = "pretrained.ckpt"


def subset(data: ClassifierImages, keep: np.ndarray) -> ClassifierImages:
    """The rows of ``data`` where the (N,) bool ``keep`` is True."""
    rows = np.flatnonzero(keep)
    index = torch.from_numpy(rows)
    frame = data.frame.iloc[rows].reset_index(drop=True)
    return ClassifierImages(data.pixels[index], data.labels[index], frame, data.loss_mask[index])


def split_real_synthetic(data: ClassifierImages) -> tuple[ClassifierImages, ClassifierImages]:
    """(real rows, synthetic rows) of an arm's training images (``build_splits`` marks ``synthetic``)."""
    synthetic = data.frame["synthetic"].to_numpy(dtype=bool)
    return subset(data, ~synthetic), subset(data, synthetic)


def pretrain(
    synthetic: ClassifierImages,
    params: TrainClassifierParams,
    weights: Path | None,
    device: torch.device,
    out: Path,
    config: dict[str, Any],
    reuse: bool = True,
) -> dict[str, torch.Tensor] | None:
    """Weights after ``params.pretrain_epochs`` passes over ``synthetic`` (or, with ``reuse``, those a
    ``pretrained.ckpt`` written with the same config holds); the phase's loss per pass is logged. None,
    with a warning, when ``synthetic`` is too small for one step (a tiny cohort's real+50 arm)."""
    if training.batches_per_epoch(len(synthetic), params.batch_size) == 0:
        log.warning(
            "synthetic pre-training skipped: %d synthetic image(s), and a step needs 2 (BatchNorm); "
            "this arm trains as the real arm does",
            len(synthetic),
        )
        return None
    path = out / PRETRAINED
    saved = None
    if reuse:
        saved = resumable(
            path,
            config,
            lambda cfg: essential_config(cfg, training.RESUME_FREE),
            "%s was written with other settings or data; pre-training afresh",
        )
    if saved is not None:
        log.info("synthetic pre-training: reusing %s", path)
        return saved["model"]
    phase = replace(params, epoch_size="arm", epochs=params.pretrain_epochs)  # one pass over the synthetic set each
    steps = training.steps_per_epoch(synthetic, phase)
    state = training.new_state(phase, weights, device, steps)
    pos_weight = training.pos_weights(synthetic.labels, params.pos_weight)
    pos_weight = pos_weight.to(device) if pos_weight is not None else None
    for epoch in range(phase.epochs):
        tic = time.perf_counter()
        loss = training.train_epoch(
            state.model, state.optimizer, state.scheduler, synthetic, epoch, phase, device, pos_weight
        )
        log.info(
            "synthetic pre-training pass %d/%d: %d images, train loss %.4f, %.0f s",
            epoch + 1,
            phase.epochs,
            len(synthetic),
            loss,
            time.perf_counter() - tic,
        )
    weights_after = training.cpu_state(state.model)
    save_checkpoint(path, {"model": weights_after, "config": config})
    return weights_after


def pretrained(
    train: ClassifierImages,
    use: str,
    params: TrainClassifierParams,
    weights: Path | None,
    device: torch.device,
    out: Path,
    config: dict[str, Any],
    reuse: bool,
) -> tuple[ClassifierImages, ClassifierImages | None, dict[str, torch.Tensor] | None]:
    """(what the real phase trains on, the synthetic images pre-trained on, the weights it starts from):
    ``(train, None, None)`` for ``use == "mixed"``; for ``"pretrain"``, the real rows of ``train``, its
    synthetic rows and the weights :func:`pretrain` gives on them."""
    if use == "mixed":
        return train, None, None
    real, synthetic = split_real_synthetic(train)
    return real, synthetic, pretrain(synthetic, params, weights, device, out, config, reuse)


def start_from(state: training.TrainState, weights: dict[str, torch.Tensor] | None) -> None:
    """Put pre-trained ``weights`` (None: leave the state as it is) into a fresh real-phase ``state``,
    its best-so-far weights too."""
    if weights is None:
        return
    state.model.load_state_dict(weights)
    state.best_weights = training.cpu_state(state.model)
