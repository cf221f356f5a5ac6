"""Figures of the evaluation: per-class ROC curves of the classifier arms; real held-out images beside their
reconstructions and the images generated from their own reports, one finding per row."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raygen.data.labels import CLASSES
from raygen.io import atomic_path

__all__ = ["plot_real_beside_generated", "plot_roc", "rows_per_finding"]


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_roc(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]], path: Path) -> None:
    """One panel per class, one line per arm, AUROC in the legend.

    ``curves[arm][class] = (false-positive rates, true-positive rates, AUROC)``; written atomically.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 5, figsize=(17, 7), squeeze=False)
    for ax, name in zip(axes.flat, CLASSES):
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        for arm, per_class in curves.items():
            if name in per_class:
                fpr, tpr, value = per_class[name]
                ax.plot(fpr, tpr, lw=1.2, label=f"{arm} {value:.3f}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=7)
        ax.set_ylabel("true-positive rate", fontsize=7)
        ax.legend(fontsize=6, loc="lower right")
    _save(fig, path)


def rows_per_finding(per_report: pd.DataFrame) -> list[tuple[str, int]]:
    """(finding, row) for the first held-out report positive for each finding, in CLASSES order, by the
    reports' ``true_<class>`` columns (the demo's ground truth). Without them (MIMIC: no ground truth), the
    first four reports, labelled "report <i>". The first, never a chosen one: the figure is not cherry-picked."""
    if not all(f"true_{c}" in per_report.columns for c in CLASSES):
        return [(f"report {i}", i) for i in range(min(4, len(per_report)))]
    rows = []
    for name in CLASSES:
        positive = np.flatnonzero(per_report[f"true_{name}"].to_numpy() == 1)
        if len(positive):
            rows.append((name, int(positive[0])))
    return rows


def plot_real_beside_generated(
    per_report: pd.DataFrame,
    real: torch.Tensor,
    generated: list[torch.Tensor],
    path: Path,
    reconstructed: torch.Tensor | None = None,
) -> None:
    """One row per finding (:func:`rows_per_finding`): the real held-out image, its VQ-GAN reconstruction
    (when given: the best a generation can look), then each seed's image generated from that image's own
    report, with the start of the report as the row's caption.

    ``real``, ``reconstructed`` and each ``generated[k]`` (N, 1, S, S) hold [0, 1] images of ``per_report``'s rows.
    """
    plt = _pyplot()
    rows = rows_per_finding(per_report)
    sets = [("real", real)] + ([("reconstructed", reconstructed)] if reconstructed is not None else [])
    sets += [(f"generated, seed {k}", g) for k, g in enumerate(generated)]
    columns = len(sets)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns + 2.6, 2.3 * len(rows)), squeeze=False)
    for (name, i), row_axes in zip(rows, axes):
        for ax, (title, images) in zip(row_axes, sets):
            ax.imshow(images[i][0].float().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        caption = textwrap.shorten(str(per_report["text"].iloc[i]), 90, placeholder="...")
        label = f"{name}\n" + textwrap.fill(caption, 28)
        row_axes[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    _save(fig, path)
