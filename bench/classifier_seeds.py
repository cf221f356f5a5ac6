"""Retrain the three classifier arms with more seeds and say how much the arms' difference moves.

    python bench/classifier_seeds.py --seeds 1 2 --out results/seeds     # in a checkout after `make demo`

The pipeline trains each arm once (``train_classifier.seed``); its intervals cover which patients were
tested, not how much a retrained network moves. This script trains every arm again with each extra
seed, on the pipeline's own manifests and synthetic images, exactly as the ``train_classifier`` stage
does (same command, a params copy that differs only in ``train_classifier.seed``), and reports per seed
the macro AUROC of each arm and the paired, patient-clustered difference to the real-only arm, plus
the mean and spread over seeds. The pipeline's own run counts as its seed. Nothing under ``results/``
of the pipeline is touched. Prints a markdown table and writes ``<out>/seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raygen.config import read_params, resolve_profile, section_dict  # noqa: E402
from raygen.data.classifier_config import ARMS  # noqa: E402
from raygen.data.labels import CLASSES  # noqa: E402
from raygen.metrics.arms import align_test_predictions, labels_and_scores, read_prediction_frame  # noqa: E402
from raygen.metrics.classification import auroc, paired_delta  # noqa: E402


def train_arms(seed: int, out: Path, params_path: Path, profile: str) -> None:
    """The three arms with ``train_classifier.seed = seed``, side by side, each on the thread count its
    params give (``runtime.train_classifier.cpu_threads``: one in the demo, as the pipeline runs them;
    0 means one here too, through OMP_NUM_THREADS)."""
    raw = read_params(params_path)
    raw.setdefault("profiles", {}).setdefault(profile, {}).setdefault("train_classifier", {})["seed"] = seed
    seeded = out / f"seed{seed}" / "params.yaml"
    seeded.parent.mkdir(parents=True, exist_ok=True)
    seeded.write_text(yaml.safe_dump(raw, sort_keys=False))
    jpg_root = f"data/{profile}/mimic-cxr-jpg/2.0.0"

    def command(arm: str) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "raygen.stages.train_classifier",
            "--params",
            str(seeded),
            "--profile",
            profile,
            "--log",
            str(out / f"seed{seed}" / f"{arm}.log"),
            "--manifest",
            "results/cohort/classifier.csv",
            "--jpg-root",
            jpg_root,
            "--arm",
            arm,
            "--out",
            str(out / f"seed{seed}" / arm),
            "--no-resume",
        ]
        return cmd + ([] if arm == "real" else ["--synthetic", "results/synthesize/aug_100.csv"])

    env = {**os.environ, "RAYGEN_TRACKING": "off", "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen(command(arm), env=env) for arm in ARMS]
    if any(job.wait() for job in jobs):
        raise SystemExit(f"seed {seed}: an arm failed; see {out / f'seed{seed}'}")


def score(folders: dict[str, Path], n_boot: int) -> dict[str, float]:
    """Macro AUROC per arm and the paired difference (with its patient-clustered 95% interval)."""
    frames = align_test_predictions({arm: read_prediction_frame(folders[arm], "test") for arm in ARMS})
    y, ref = labels_and_scores(frames["real"])
    groups = frames["real"]["subject_id"].to_numpy()
    row: dict[str, float] = {}
    for arm in ARMS:
        row[arm] = auroc(y, labels_and_scores(frames[arm])[1], CLASSES).macro
        if arm != "real":
            d = paired_delta(y, ref, labels_and_scores(frames[arm])[1], CLASSES, n_boot=n_boot, groups=groups)
            row[f"delta/{arm}"], (row[f"delta/{arm}_low"], row[f"delta/{arm}_high"]) = d.delta, d.interval
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="extra training seeds")
    parser.add_argument("--out", type=Path, default=Path("results/seeds"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--skip-training", action="store_true", help="score what --out already holds")
    args = parser.parse_args(argv)
    raw = read_params(args.params)
    profile = resolve_profile(raw)
    base_seed = section_dict(raw, "train_classifier", profile).get("seed", 0)
    runs = {base_seed: {arm: Path("results/train_classifier") / arm for arm in ARMS}}
    for seed in args.seeds:
        if not args.skip_training:
            train_arms(seed, args.out, args.params, profile)
        runs[seed] = {arm: args.out / f"seed{seed}" / arm for arm in ARMS}
    rows = {seed: score(folders, args.n_boot) for seed, folders in runs.items()}
    summary = {
        key: {
            "mean": float(np.mean([r[key] for r in rows.values()])),
            "std": float(np.std([r[key] for r in rows.values()], ddof=1)) if len(rows) > 1 else 0.0,
        }
        for key in next(iter(rows.values()))
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps({"profile": profile, "runs": rows, "summary": summary}, indent=2))
    print("| seed | real | real+50 | real+100 | real+50 - real [95% CI] | real+100 - real [95% CI] |")
    print("|---|---|---|---|---|---|")
    for seed, r in rows.items():
        print(
            f"| {seed} | {r['real']:.3f} | {r['real+50']:.3f} | {r['real+100']:.3f} | "
            f"{r['delta/real+50']:+.3f} [{r['delta/real+50_low']:+.3f}, {r['delta/real+50_high']:+.3f}] | "
            f"{r['delta/real+100']:+.3f} [{r['delta/real+100_low']:+.3f}, {r['delta/real+100_high']:+.3f}] |"
        )
    s = summary
    print(
        f"| mean (sd) over {len(rows)} | {s['real']['mean']:.3f} ({s['real']['std']:.3f}) | "
        f"{s['real+50']['mean']:.3f} ({s['real+50']['std']:.3f}) | {s['real+100']['mean']:.3f} "
        f"({s['real+100']['std']:.3f}) | {s['delta/real+50']['mean']:+.3f} ({s['delta/real+50']['std']:.3f}) | "
        f"{s['delta/real+100']['mean']:+.3f} ({s['delta/real+100']['std']:.3f}) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
