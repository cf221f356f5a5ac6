"""How many synthetic images of each class the augmentation arms get (the paper's recipe, docs/mimic-cxr.md s. 5).

The paper prompts the generator with bare class names, one-hot labels, "counts per class inversely
proportional to class frequency (rarest class gets most)", 4,673 images for the 100% arm and "the first
half of each class", 2,337 images, for the 50% arm. Its real training set: 4,684 images whose positives
per class (in :data:`raygen.data.labels.CLASSES` order) are 1307, 1312, 226, 855, 217, 260, 1148, 1537,
629, 326.

Reconstruction (the authors' public code, farazali7/multimodal-xray ``src/predict.py`` and
``data_preprocess/synthetic_json.py``): class shares ``p_c = n_c / sum(n)`` are turned into weights
``1 - p_c`` (the complement, which sums to K - 1), and the 50% arm takes ``len // 2`` of each class's
list. Normalising the complement weights to the real training size and flooring,

    count_c = floor(total * (1 - p_c) / (K - 1)),    half_c = count_c // 2,

gives 4,680 images for the 100% arm and exactly 2,337 for the 50% arm from the paper's numbers. The
paper's 4,673 is not reachable by any per-class counts whose floor-halves sum to 2,337: sum(count // 2)
= (sum(count) - K_odd) / 2 <= sum(count) / 2, so 2,337 halves need at least 4,674 images. So 4,673 is 7 images short of
this rule (likely images lost after generation); we reproduce the 50% arm exactly and the 100% arm to
within 7 (0.15%). The literal "inversely proportional" reading (weights 1 / n_c, :data:`RULES` ``"inverse"``)
is offered too; it gives 4,680 and 2,339 and far more skewed counts (Fracture 992 vs Pleural Effusion 140).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["DEFAULT_RULE", "PAPER_REAL_POSITIVES", "PAPER_REAL_TRAIN_SIZE", "RULES", "class_counts", "half_arm"]

# docs/mimic-cxr.md section 5: positives per class in CLASSES order, and the real training set size.
PAPER_REAL_POSITIVES: tuple[int, ...] = (1307, 1312, 226, 855, 217, 260, 1148, 1537, 629, 326)
PAPER_REAL_TRAIN_SIZE = 4684


def _complement_weights(counts: Sequence[int]) -> list[float]:
    """(1 - share) / (K - 1): sums to 1; the authors' weighting (the rarest class gets the most)."""
    total = sum(counts)
    return [(1.0 - n / total) / (len(counts) - 1) for n in counts]


def _inverse_weights(counts: Sequence[int]) -> list[float]:
    """(1 / n) / sum(1 / n): literally inversely proportional to class frequency."""
    if min(counts) <= 0:
        raise ValueError("inverse-frequency weights need every class to have positives")
    inv = [1.0 / n for n in counts]
    return [w / sum(inv) for w in inv]


RULES: dict[str, Callable[[Sequence[int]], list[float]]] = {
    "complement": _complement_weights,
    "inverse": _inverse_weights,
}
DEFAULT_RULE = "complement"  # reproduces the paper's 50% arm (2,337) exactly; see module docstring


def class_counts(real_positive_counts: Sequence[int], total: int, rule: str = DEFAULT_RULE) -> list[int]:
    """Synthetic images per class for the 100% arm: ``floor(total * weight_c)``, weights by ``rule``.

    Args:
        real_positive_counts: positives per class in the real training set (CLASSES order), ints >= 0.
        total: the arm's nominal size, the real training set size for the 100% arm.
        rule: a key of :data:`RULES`.

    Returns:
        Counts per class (same order); they sum to at most ``total`` (flooring drops < K images).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {sorted(RULES)}")
    if len(real_positive_counts) < 2 or sum(real_positive_counts) <= 0 or min(real_positive_counts) < 0:
        raise ValueError("need >= 2 classes with non-negative counts and at least one positive")
    return [math.floor(total * w) for w in RULES[rule](real_positive_counts)]


def half_arm(counts: Sequence[int]) -> list[int]:
    """The 50% arm: the first half of each class's images, ``count // 2`` (the authors' ``[:len // 2]``)."""
    return [n // 2 for n in counts]
