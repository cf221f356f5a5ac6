"""Training the DenseNet-121 classifier of one arm: epochs, validation, early stopping, resume, predictions.

Data order and augmentation are pure functions of (seed, epoch), so a run resumed from ``last.ckpt``
equals an uninterrupted one. The score that picks the best epoch is the validation macro AUROC over
the classes that hold both labels (:func:`raygen.metrics.classification.auroc`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import save_checkpoint
from raygen.config import to_dict
from raygen.data.classifier_data import (
    ClassifierImages,
    ClassifierSplits,
    augment_batch,
    build_splits,
    load_images,
    read_classifier_manifest,
    read_synthetic_manifest,
)
from raygen.data.labels import CLASSES
from raygen.metrics.classification import auroc
from raygen.models.classifier import CHEXNET_URL, XRV_URL, XrayDenseNet, build_classifier
from raygen.runtime import autocast, autocast_dtype, seed_everything
from raygen.training.scaffolding import adamw, essential_config, resumable, warmup_cosine_scheduler

if TYPE_CHECKING:
    from raygen.stages.train_classifier import TrainClassifierParams

log = logging.getLogger(__name__)

POS_WEIGHT_MAX = 20.0  # cap on neg/pos: a class with 2 positives must not dominate the loss
LR_FLOOR = 0.0  # the cosine decay ends at 0 at the last step
# Params that may change between a killed run and its resumption without invalidating it.
RESUME_FREE = ("workers", "device", "eval_batch_size", "patience")


def load_arm(
    manifest: Path,
    jpg_root: Path,
    arm: str,
    synthetic: Path | None,
    synthetic_root: Path | None,
    params: TrainClassifierParams,
) -> tuple[ClassifierSplits, dict[str, ClassifierImages]]:
    """The arm's train / val / test rows, each decoded once at ``resolution`` into RAM."""
    started = time.perf_counter()
    frame = read_classifier_manifest(manifest)
    synthetic_frame = read_synthetic_manifest(synthetic, synthetic_root) if synthetic else None
    splits = build_splits(frame, arm, synthetic_frame, params.max_train_images, params.seed)
    log.info(
        "arm %s: %d real + %d synthetic training rows, %d val, %d test",
        arm,
        splits.n_real_train,
        splits.n_synthetic,
        len(splits.val),
        len(splits.test),
    )
    data = {
        name: load_images(
            rows, jpg_root, params.resolution, params.channels, params.workers, synthetic_labels=params.synthetic_labels
        )
        for name, rows in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    }
    log.info(
        "decoded %d / %d / %d images at %d px in %.1f s",
        len(data["train"]),
        len(data["val"]),
        len(data["test"]),
        params.resolution,
        time.perf_counter() - started,
    )
    if len(data["train"]) < 2:
        raise SystemExit("fewer than 2 readable training images")
    return splits, data


def init_weights_file(init: str, chexnet: Path | None, xrv: Path | None) -> Path | None:
    """The weight file ``init`` chooses among the flags' files (the pipeline passes both); only the
    chosen one must exist, and a missing one is an error naming where to get it."""
    if init == "scratch":
        return None
    path = {"chexnet": chexnet, "xrv": xrv}[init]
    where = CHEXNET_URL if init == "chexnet" else XRV_URL
    if path is None:
        raise SystemExit(
            f"params say init: {init}; pass its local weight file with --init-{init} "
            f"(get it from {where}; nothing is downloaded)"
        )
    if not Path(path).is_file():
        raise SystemExit(
            f"params say init: {init} but {path} does not exist; get it from {where} and put it "
            "there (nothing is downloaded), or set train_classifier.init: scratch"
        )
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Metrics, early stopping, loss weights
# ---------------------------------------------------------------------------------------------


def _macro_auroc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Macro AUROC of (N, 10) labels / scores over the classes that hold both 0 and 1; NaN when none do
    (the evaluation metric, :func:`raygen.metrics.classification.auroc`)."""
    return auroc(y_true, y_prob, CLASSES).macro


@dataclass
class EarlyStopping:
    """Best-so-far bookkeeping: a strictly higher score is an improvement; NaN never is, except that
    the first epoch always becomes the best (so a run always has weights to keep)."""

    patience: int
    best_score: float = float("nan")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s score; True when it is the new best."""
        if self.best_epoch < 0 or (not math.isnan(score) and (math.isnan(self.best_score) or score > self.best_score)):
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience


def pos_weights(labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """(K,) BCE positive weights: neg / pos per class for ``balanced`` (capped, 1 without positives)."""
    if mode == "none":
        return None
    pos = labels.sum(0)
    neg = len(labels) - pos
    return torch.where(pos > 0, neg / pos.clamp(min=1), torch.ones_like(pos)).clamp(1.0, POS_WEIGHT_MAX)


# ---------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of ``epoch``: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_indices(n: int, per_epoch: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of ``epoch`` when each epoch takes ``per_epoch`` of ``n`` images.

    The images come from an endless stream of passes, pass k being :func:`epoch_order` (n, seed, k), so
    every image is drawn once per pass and the order is a function of (seed, epoch) only (resumable).
    ``per_epoch == n`` is exactly ``epoch_order(n, seed, epoch)``.
    """
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    first, last = start // n, (stop - 1) // n
    stream = np.concatenate([epoch_order(n, seed, k) for k in range(first, last + 1)])
    return stream[start - first * n : stop - first * n]


def images_per_epoch(data: ClassifierImages, epoch_size: str) -> int:
    """``len(data)`` for ``epoch_size: arm``; for ``real`` the number of readable real training images
    (``build_splits`` marks each training row's ``synthetic`` column)."""
    return len(data) if epoch_size == "arm" else int((~data.frame["synthetic"]).sum())


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The augmentation generator of ``epoch`` (CPU), a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches plus the remainder, except a remainder of one image (BatchNorm needs two)."""
    return n // batch_size + (1 if n % batch_size > 1 else 0)


# ---------------------------------------------------------------------------------------------
# Training and inference
# ---------------------------------------------------------------------------------------------


def _to_device(pixels: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = pixels.to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(
    model: XrayDenseNet, data: ClassifierImages, params: TrainClassifierParams, device: torch.device
) -> np.ndarray:
    """Sigmoid probabilities (N, K) float64 for every image of ``data`` (eval mode, no augmentation)."""
    model.eval()
    amp = autocast_dtype(device, params.precision)
    out = []
    for start in range(0, len(data), params.eval_batch_size):
        x = _to_device(data.pixels[start : start + params.eval_batch_size], device, params.channels_last)
        with autocast(device, amp):
            logits = model(x)
        out.append(torch.sigmoid(logits.float()).double().cpu())
    model.train()
    return torch.cat(out).numpy() if out else np.zeros((0, len(CLASSES)))


def train_epoch(
    model: XrayDenseNet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data: ClassifierImages,
    epoch: int,
    params: TrainClassifierParams,
    device: torch.device,
    pos_weight: torch.Tensor | None,
) -> float:
    """One epoch (:func:`images_per_epoch` images of ``data`` in the epoch's order); returns the mean loss."""
    model.train()
    amp = autocast_dtype(device, params.precision)
    per_epoch = images_per_epoch(data, params.epoch_size)
    order = torch.from_numpy(epoch_indices(len(data), per_epoch, params.seed, epoch))
    generator = epoch_generator(params.seed, epoch)
    steps = batches_per_epoch(per_epoch, params.batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    desc = f"train_classifier epoch {epoch + 1}/{params.epochs}"
    bar = tqdm(range(steps), desc=desc, unit="batch", mininterval=2.0, leave=False)
    for i in bar:
        idx = order[i * params.batch_size : (i + 1) * params.batch_size]
        x = augment_batch(data.pixels[idx].float(), generator, params.augment)  # augmentation on the CPU generator
        x = _to_device(x, device, params.channels_last)
        y, counted = data.labels[idx].to(device), data.loss_mask[idx].to(device)
        with autocast(device, amp):
            logits = model(x)
        # Mean over the labels that count (all of them unless synthetic_labels: prompted masks some out).
        losses = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight, reduction="none")
        loss = (losses * counted).sum() / counted.sum().clamp_min(1.0)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach().double() * len(idx)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return float(total) / max(1, min(per_epoch, steps * params.batch_size))


# ---------------------------------------------------------------------------------------------
# State and checkpoints
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything the epoch loop mutates and ``last.ckpt`` stores."""

    model: XrayDenseNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    stopper: EarlyStopping
    best_weights: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    epoch: int = 0  # epochs completed


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's weights (best-so-far and checkpoints outlive the live tensors)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def steps_per_epoch(train: ClassifierImages, params: TrainClassifierParams) -> int:
    """Optimizer steps per epoch; an epoch without a step is an error."""
    steps = batches_per_epoch(images_per_epoch(train, params.epoch_size), params.batch_size)
    if steps == 0:
        raise SystemExit("epoch_size: real needs at least 2 readable real training images")
    return steps


def new_state(
    params: TrainClassifierParams, weights: Path | None, device: torch.device, epoch_steps: int
) -> TrainState:
    """Seeded initial weights (or the pretrained backbone), AdamW and the per-step schedule."""
    seed_everything(params.seed)
    model = build_classifier(params.channels, params.init, weights, memory_efficient=params.memory_efficient)
    model = model.to(device)
    if params.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = adamw(model, params.lr, params.weight_decay, device)
    log.info(
        "epoch size %s: %d steps of %d images per epoch, at most %d epochs",
        params.epoch_size,
        epoch_steps,
        params.batch_size,
        params.epochs,
    )
    scheduler = warmup_cosine_scheduler(optimizer, params.warmup_steps, params.epochs * epoch_steps, floor=LR_FLOOR)
    return TrainState(model, optimizer, scheduler, EarlyStopping(params.patience), cpu_state(model), [])


def last_state(state: TrainState, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.epoch,
        "epoch": state.epoch,
        "best": {
            "weights": state.best_weights,
            "epoch": state.stopper.best_epoch,
            "score": state.stopper.best_score,
            "bad_epochs": state.stopper.bad_epochs,
        },
        "history": pd.DataFrame(state.history).to_dict(orient="list"),
        "rng": {"torch": torch.get_rng_state()},
        "config": config,
    }


def restore(state: TrainState, ckpt: dict[str, Any]) -> None:
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    best = ckpt["best"]
    state.best_weights = best["weights"]
    state.stopper.best_epoch, state.stopper.best_score = int(best["epoch"]), float(best["score"])
    state.stopper.bad_epochs = int(best["bad_epochs"])
    state.history = pd.DataFrame(ckpt["history"]).to_dict(orient="records")
    state.epoch = int(ckpt["epoch"])
    torch.set_rng_state(ckpt["rng"]["torch"])


def resume(state: TrainState, path: Path, config: dict[str, Any]) -> None:
    """Continue from ``path`` when a run with the same essential settings wrote it."""
    ckpt = resumable(
        path,
        config,
        lambda cfg: essential_config(cfg, RESUME_FREE),
        "%s was written with other settings or data; starting afresh",
    )
    if ckpt is None:
        return
    restore(state, ckpt)
    log.info(
        "resumed from %s after epoch %d (best %.4f at epoch %d)",
        path,
        state.epoch,
        state.stopper.best_score,
        state.stopper.best_epoch + 1,
    )


def _on_epoch_end(epoch: int) -> None:
    """Called after each epoch's checkpoint (a seam for fault-injection tests)."""


# ---------------------------------------------------------------------------------------------
# The epoch loop and its results
# ---------------------------------------------------------------------------------------------


def run_epochs(
    state: TrainState,
    data: dict[str, ClassifierImages],
    params: TrainClassifierParams,
    device: torch.device,
    pw: torch.Tensor | None,
    config: dict[str, Any],
    last_path: Path,
    tracker: tracking.Tracker,
) -> None:
    """Epochs ``state.epoch .. epochs - 1`` with validation, early stopping and a checkpoint each."""
    val_y = data["val"].labels.numpy()
    while state.epoch < params.epochs and not state.stopper.stop:
        tic = time.perf_counter()
        loss = train_epoch(
            state.model, state.optimizer, state.scheduler, data["train"], state.epoch, params, device, pw
        )
        score = _macro_auroc(val_y, predict(state.model, data["val"], params, device))
        if state.stopper.update(state.epoch, score):
            state.best_weights = cpu_state(state.model)
        row = {
            "epoch": state.epoch + 1,
            "train_loss": loss,
            "val_macro_auroc": score,
            "lr": state.scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - tic,
        }
        state.history.append(row)
        state.epoch += 1
        log.info(
            "epoch %d: train loss %.4f, val macro AUROC %.4f, %.0f s%s",
            state.epoch,
            loss,
            score,
            row["seconds"],
            " (best)" if state.stopper.best_epoch == state.epoch - 1 else "",
        )
        tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=state.epoch)
        save_checkpoint(last_path, last_state(state, config))
        _on_epoch_end(state.epoch)
    if state.stopper.stop:
        log.info("early stop after epoch %d: no better val macro AUROC for %d epochs", state.epoch, params.patience)


def predictions_frame(data: ClassifierImages, prob: np.ndarray) -> pd.DataFrame:
    """dicom_id, subject_id, the 10 true labels, ``prob_<class>`` each (+ the demo's ``true_*``)."""
    frame = data.frame
    truth = [c for c in frame.columns if c.startswith("true_")]
    out = frame[["dicom_id", "subject_id", *CLASSES, *truth]].copy()
    for k, name in enumerate(CLASSES):
        out[f"prob_{name}"] = prob[:, k]
    return out


def best_predictions(
    state: TrainState, data: dict[str, ClassifierImages], params: TrainClassifierParams, device: torch.device
) -> dict[str, np.ndarray]:
    """Loads the best epoch's weights into the model; its val and test probabilities."""
    state.model.load_state_dict(state.best_weights)
    return {name: predict(state.model, data[name], params, device) for name in ("val", "test")}


def best_checkpoint(state: TrainState, params: TrainClassifierParams, arm: str) -> dict[str, Any]:
    """``model.ckpt``: the best weights with what rebuilds the network."""
    best_epoch = state.stopper.best_epoch + 1
    return {
        "model": state.best_weights,
        "step": best_epoch,
        "epoch": best_epoch,
        "classifier": to_dict(state.model.config),
        "classes": list(CLASSES),
        "config": {"params": to_dict(params), "arm": arm},
    }


def final_metrics(
    arm: str,
    state: TrainState,
    data: dict[str, ClassifierImages],
    probs: dict[str, np.ndarray],
    splits: ClassifierSplits,
    epoch_steps: int,
    params: TrainClassifierParams,
    started: float,
) -> dict[str, Any]:
    """metrics.json: the best epoch's val and test macro AUROC, the run's counts, seed and wall time.
    ``train_images`` and ``optimizer_steps`` count every training image and step of the arm, synthetic
    pre-training (``synthetic_use: pretrain``) included."""
    pretrained_on = len(data["pretrain"]) if data.get("pretrain") is not None else 0
    pretrain_steps = batches_per_epoch(pretrained_on, params.batch_size) * params.pretrain_epochs
    return {
        "arm": arm,
        "best_epoch": state.stopper.best_epoch + 1,
        "epochs_run": state.epoch,
        "epoch_size": params.epoch_size,
        "steps_per_epoch": epoch_steps,
        "optimizer_steps": epoch_steps * state.epoch + pretrain_steps,
        "pretrain_steps": pretrain_steps,
        "val_macro_auroc": _macro_auroc(data["val"].labels.numpy(), probs["val"]),
        "test_macro_auroc": _macro_auroc(data["test"].labels.numpy(), probs["test"]),
        "train_images": len(data["train"]) + pretrained_on,
        "synthetic_use": params.synthetic_use if splits.n_synthetic else "none",
        "pretrain_images": pretrained_on,
        "real_train_images": splits.n_real_train,
        "synthetic_train_images": splits.n_synthetic,
        "val_images": len(data["val"]),
        "test_images": len(data["test"]),
        "seed": params.seed,
        "torch_threads": torch.get_num_threads(),  # CPU results depend on it in the last bits
        "wall_s": time.perf_counter() - started,
    }


def log_summary(metrics: dict[str, Any]) -> None:
    log.info(
        "arm %s: best epoch %d, val macro AUROC %.4f, test macro AUROC %.4f (%d test images), %.0f s",
        metrics["arm"],
        metrics["best_epoch"],
        metrics["val_macro_auroc"],
        metrics["test_macro_auroc"],
        metrics["test_images"],
        metrics["wall_s"],
    )
