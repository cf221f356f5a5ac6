"""Re-make the demo classifier's settings on validation data only: one run of an arm per variant.

    python bench/tune_classifier.py --out /tmp/tune \\
        --variant batch_size=16 --variant augment.enabled=true --variant lr=1.0e-3   # after `make demo`
    python bench/tune_classifier.py --arm real+50 --synthetic results/synthesize/aug_100.csv \\
        --variant synthetic_labels=prompted --out /tmp/tune50

Each variant is the active profile's ``train_classifier`` section with one or more ``key=value``
overrides (dotted keys reach into ``augment``); the baseline is the section as it is. Every run is the
``train_classifier`` stage's own command on the pipeline's ``results/cohort/classifier.csv`` (the
``--arm``, real by default, with ``--synthetic`` for an augmented one; fresh, tracking off). The
table shows each run's best validation macro AUROC, its epoch and wall time. It never reads or shows
a test number, so that nothing here can be chosen on test data (the
stage itself still writes its test AUROC to ``<out>/<variant>/``; do not look). The stage's console
output goes to ``<out>/<variant>/console.txt``. A variant already trained in ``--out`` with the same
params is reused, not retrained. Writes ``<out>/tuning.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from variants import parse_variant, variant_name, variant_params  # noqa: E402

from raygen.config import read_params, resolve_profile  # noqa: E402


def run_variant(
    name: str, params: dict, profile: str, out: Path, arm: str, synthetic: Path | None
) -> dict[str, object]:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(params, sort_keys=False)
    done = folder / arm / "metrics.json"
    if not (done.is_file() and (folder / "params.yaml").is_file() and (folder / "params.yaml").read_text() == text):
        done.unlink(missing_ok=True)
        (folder / "params.yaml").write_text(text)
        _train(folder, profile, arm, synthetic)
    return _row(name, json.loads(done.read_text()))


def _train(folder: Path, profile: str, arm: str, synthetic: Path | None) -> None:
    command = [
        sys.executable,
        "-m",
        "raygen.stages.train_classifier",
        *("--params", str(folder / "params.yaml"), "--profile", profile, "--log", str(folder / "stage.log")),
        *("--manifest", "results/cohort/classifier.csv", "--jpg-root", f"data/{profile}/mimic-cxr-jpg/2.0.0"),
        *("--arm", arm, "--out", str(folder / arm), "--no-resume"),
        *(["--synthetic", str(synthetic)] if synthetic else []),
    ]
    with (folder / "console.txt").open("w") as console:  # the stage logs its test AUROC: keep it off screen
        env = {**os.environ, "RAYGEN_TRACKING": "off"}
        subprocess.run(command, check=True, env=env, stdout=console, stderr=subprocess.STDOUT)


def _row(name: str, metrics: dict[str, object]) -> dict[str, object]:
    return {
        "variant": name,
        "val_macro_auroc": metrics["val_macro_auroc"],
        "best_epoch": metrics["best_epoch"],
        "wall_s": round(metrics["wall_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--variant", action="append", default=[], help="key=value[,key=value] (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/raygen-tune"))
    parser.add_argument("--arm", default="real", help="real | real+50 | real+100 (default: real)")
    parser.add_argument("--synthetic", type=Path, default=None, help="the 100%% synthetic manifest (augmented arms)")
    args = parser.parse_args()
    raw = read_params(args.params)
    profile = resolve_profile(raw)
    rows = [run_variant("baseline", raw, profile, args.out, args.arm, args.synthetic)]
    for text in dict.fromkeys(t for t in args.variant if t):  # "" is the baseline, already run
        variant = variant_params(raw, profile, "train_classifier", parse_variant(text))
        rows.append(run_variant(variant_name(text), variant, profile, args.out, args.arm, args.synthetic))
    (args.out / "tuning.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| variant | val macro AUROC | best epoch | wall |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['val_macro_auroc']:.3f} | {r['best_epoch']} | {r['wall_s']} s |")


if __name__ == "__main__":
    main()
