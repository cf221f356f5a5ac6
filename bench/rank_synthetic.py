"""Reorder a synthetic set so each class's first half is the half a train-split classifier recognises best.

    python bench/rank_synthetic.py --out /tmp/ranked/aug_100.csv       # after `make demo`
    python bench/tune_classifier.py --arm real+50 --synthetic /tmp/ranked/aug_100.csv --out /tmp/tune-ranked

The real+50 arm takes the first half of each class of ``aug_100.csv``. This writes a copy of the file
whose classes are sorted by the probability ``--classifier`` (by default the run's real-only classifier:
trained on the training split, its epoch picked on validation, so no held-out image shapes the choice)
gives each image for the class it was prompted with, best first. The real+50 arm of the copy is then
"drop the synthetic images the classifier does not recognise", at the recipe's size. Paths in the copy
are absolute. Prints the mean probability of the kept and the dropped half per class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raygen.data.images import image_side  # noqa: E402
from raygen.data.labels import CLASSES  # noqa: E402
from raygen.metrics.conditional import classifier_probs, load_classifier  # noqa: E402
from raygen.metrics.image_sets import load_images_checked  # noqa: E402


def rank_by_class(aug: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    """``aug``'s rows class by class (CLASSES order), each class best ``score`` first (ties keep file
    order); prints the mean score of the half the real+50 arm keeps and of the half it drops."""
    score = pd.Series(score, index=aug.index)
    parts = []
    for name in CLASSES:
        group = score[aug["prompt_class"] == name].sort_values(ascending=False, kind="stable")
        half = len(group) // 2
        kept, dropped = group.iloc[:half].mean(), group.iloc[half:].mean()
        print(f"{name:18s} {len(group):4d} images: kept half {kept:.3f}, dropped {dropped:.3f}")
        parts.append(aug.loc[group.index])
    return pd.concat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, default=Path("results/synthesize"), help="synthesize folder")
    parser.add_argument("--classifier", type=Path, default=Path("results/train_classifier/real/model.ckpt"))
    parser.add_argument("--out", type=Path, required=True, help="the reordered aug_100.csv to write")
    args = parser.parse_args()
    aug = pd.read_csv(args.synthetic / "aug_100.csv")
    paths = [args.synthetic / p for p in aug["path"]]
    images, ok = load_images_checked(paths, image_side(paths[0]), workers=2)
    if not ok.all():
        raise SystemExit(f"{int((~ok).sum())} synthetic images unreadable under {args.synthetic}")
    judge = load_classifier(args.classifier, "cpu")
    probs = classifier_probs(judge.model, images, judge.resolution, torch.device("cpu"))
    prompted = aug["prompt_class"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    ranked = rank_by_class(aug, probs[np.arange(len(aug)), prompted])
    ranked["path"] = [str((args.synthetic / p).resolve()) for p in ranked["path"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ranked.to_csv(args.out, index=False)
    print(f"wrote {args.out} ({len(ranked)} rows)")


if __name__ == "__main__":
    main()
