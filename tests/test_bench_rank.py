"""bench/rank_synthetic.py: the real+50 arm of the ranked copy is the better-recognised half of each class."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from rank_synthetic import rank_by_class  # noqa: E402

from raygen.data.classifier_data import synthetic_for_arm  # noqa: E402
from raygen.data.labels import CLASSES  # noqa: E402


def test_each_classs_first_half_is_its_best_scored_half():
    aug = pd.DataFrame({"path": [f"{i}.png" for i in range(6)], "prompt_class": [CLASSES[1]] * 4 + [CLASSES[0]] * 2})
    ranked = rank_by_class(aug, np.array([0.1, 0.9, 0.5, 0.5, 0.2, 0.3]))
    assert list(ranked["path"]) == ["5.png", "4.png", "1.png", "2.png", "3.png", "0.png"]  # ties keep file order
    kept = synthetic_for_arm(ranked, "real+50")  # what the stage's real+50 arm trains on
    assert set(kept["path"]) == {"5.png", "1.png", "2.png"}
