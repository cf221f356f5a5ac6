"""Figures of the evaluation: per-class ROC curves of the classifier arms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raygen.data.labels import CLASSES
from raygen.io import atomic_path

__all__ = ["plot_roc"]


def plot_roc(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]], path: Path) -> None:
    """One panel per class, one line per arm, AUROC in the legend.

    ``curves[arm][class] = (false-positive rates, true-positive rates, AUROC)``; written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
