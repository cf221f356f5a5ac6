"""``raygen demo-weights``: re-create the demo's pinned VQ-GAN and FID network in ``weights/demo/``.

Command line::

    raygen demo-weights --out weights/demo [--part vqgan] [--work .demo-weights] [--params params.yaml]

It runs the pipeline's own stage commands under the ``demo_weights`` profile (the demo's params with
another dataset seed and longer training), in a work folder of its own:

1. ``download``: the demo dataset rendered with ``download.demo.seed`` of that profile; its patients
   and images must share nothing with the demo's (checked on the two datasets' plans first);
2. ``sections``, ``cohort``: the same cohort rules as the demo;
3. ``vqgan`` (``source: train``) on the generator-train images;
4. ``train_classifier --arm real`` on the classifier-train images: the FID network;

then packs them into ``--out`` (fp16 weights, UniXGen's layout for the VQ-GAN), writes ``SHA256SUMS``
and ``provenance.json`` (the commit each stage ran at, params, the held-out metrics each measured). A killed run
resumes: a finished stage is skipped, and the VQ-GAN resumes from its training state. A stage whose
params section or source files changed since it ran is run again from scratch, with every stage after
it that depends on it; nothing made by another recipe is reused. Training on a CPU is not
bit-reproducible across machines, so a re-created file has another hash: commit the new SHA256SUMS
with it.

``--part`` re-creates one part and keeps the other exactly as it is in ``--out`` (checked against its
SHA256SUMS line, with its provenance entry carried over). Keeping the FID network keeps the demo's ruler:
numbers measured with it stay comparable across the change.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygen.io import write_json
from raygen.models import pinned
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

PROFILE = "demo_weights"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raygen demo-weights",
        description="Re-create the demo's pinned VQ-GAN and FID network (weights/demo/) with the pipeline's stages.",
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("weights/demo"), help="where to write (default: %(default)s)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(".demo-weights"),
        help="dataset and stage outputs; kept for resuming and inspection (default: %(default)s)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument(
        "--part",
        action="append",
        choices=sorted(PARTS),
        help="re-create only this part (repeatable; default: both); the other stays as it is in --out",
    )
    parser.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    return parser


# Each pinned part, the step that trains it, and its provenance entry.
PARTS = {"vqgan": "vqgan", "fid-network": "train_classifier"}
PROVENANCE_KEYS = {"vqgan": "vqgan", "fid-network": "fid_network"}
PART_FILES = {"vqgan": (pinned.VQGAN_CONFIG, pinned.VQGAN_CHECKPOINT), "fid-network": (pinned.FID_NETWORK,)}


# Each step's upstream steps: a step runs again when its own recipe changed or an upstream step ran.
UPSTREAM = {
    "download": (),
    "sections": ("download",),
    "cohort": ("download", "sections"),
    "vqgan": ("download", "sections", "cohort"),
    "train_classifier": ("download", "sections", "cohort"),
}


@dataclass(frozen=True)
class Step:
    stage: str
    done: Path  # written last by the stage: the step finished
    out: Path  # everything the step writes, removed before it runs on another recipe
    command: list[str]


def stage_commands(params: Path, work: Path) -> list[Step]:
    """The recipe's steps, in order."""
    data, results, logs = work / "data", work / "results", work / "logs"
    jpg = data / "mimic-cxr-jpg/2.0.0"

    def cmd(stage: str, *args: Any) -> list[str]:
        head = [sys.executable, "-m", "raygen", stage, "--params", str(params), "--profile", PROFILE]
        return [*head, "--log", str(logs / f"{stage}.log"), *map(str, args)]

    sections = results / "sections"
    return [
        Step("download", data / "download-complete.json", data, cmd("download", "--out", data)),
        Step(
            "sections",
            sections / "prompts.csv",
            sections,
            cmd(
                "sections",
                *("--reports-root", data / "mimic-cxr/2.0.0"),
                *("--out", sections / "mimic_cxr_sectioned.csv", "--prompts", sections / "prompts.csv"),
            ),
        ),
        Step(
            "cohort",
            results / "cohort/counts.json",
            results / "cohort",
            cmd(
                "cohort",
                *("--jpg-root", jpg, "--sections", sections / "prompts.csv"),
                *("--ground-truth", data / "demo-ground-truth.csv", "--out", results / "cohort"),
            ),
        ),
        Step(
            "vqgan",
            results / "vqgan/metrics.json",
            results / "vqgan",
            cmd("vqgan", "--manifest", results / "cohort/generator.csv", "--jpg-root", jpg, "--out", results / "vqgan"),
        ),
        Step(
            "train_classifier",
            results / "train_classifier/real/metrics.json",
            results / "train_classifier/real",
            cmd(
                "train_classifier",
                *("--manifest", results / "cohort/classifier.csv", "--jpg-root", jpg),
                *("--arm", "real", "--out", results / "train_classifier/real"),
            ),
        ),
    ]


def stage_recipe(raw: dict[str, Any], stage: str) -> dict[str, Any]:
    """What a step's result depends on: its params section under the profile, and its source files."""
    import hashlib

    from raygen.config import scientific_section
    from raygen.pipeline.code_deps import REPO, stage_code_deps

    code = hashlib.sha256()
    for path in stage_code_deps(stage):
        code.update(path.encode() + b"\0" + (REPO / path).read_bytes())
    return json.loads(json.dumps({"params": scientific_section(raw, stage, PROFILE), "code": code.hexdigest()}))


def run_steps(params: Path, work: Path, parts: tuple[str, ...] = tuple(PARTS)) -> bool:
    """Run each step whose recipe (params, code) changed, that never finished, or whose upstream ran;
    skip the others, and the training steps of parts not in ``parts``. A step of another recipe is
    removed first, so nothing stale is ever reused; a step killed under the same recipe keeps its folder
    and resumes. Returns False when a step failed."""
    from raygen.config import read_params

    raw = read_params(params)
    record_path = work / "recipes.json"
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
    ran: set[str] = set()
    skipped = {PARTS[part] for part in PARTS if part not in parts}
    for step in stage_commands(params, work):
        if step.stage in skipped:
            continue
        recipe = stage_recipe(raw, step.stage)
        same = recorded.get(step.stage, {}).get("recipe") == recipe and not ran & set(UPSTREAM[step.stage])
        if same and recorded[step.stage]["finished"] and step.done.is_file():
            log.info("%s: done before with the same params and code, skipped", step.stage)
            continue
        if not same:  # another recipe's output, or a killed run of one: start afresh
            shutil.rmtree(step.out, ignore_errors=True)
        recorded[step.stage] = {"recipe": recipe, "finished": False}
        write_json(record_path, recorded)
        log.info("%s: %s", step.stage, " ".join(step.command))
        if subprocess.run(step.command).returncode:
            log.error("%s failed; see %s. Run the same command again to resume.", step.stage, work / "logs")
            return False
        recorded[step.stage] |= {"finished": True, "commit": _commit()}
        write_json(record_path, recorded)
        ran.add(step.stage)
    return True


def _commit() -> str | None:
    """HEAD, marked ``-dirty`` when tracked files differ from it (the recipe's source hash says exactly
    which files a stage ran with; the commit says where to find them). Asked of the checkout the stages'
    code comes from, wherever the tool runs."""
    from raygen.pipeline.code_deps import REPO

    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], capture_output=True).returncode != 0
    return f"{head}-dirty" if head and dirty else head or None


def check_disjoint(params: Path) -> dict[str, int]:
    """The demo_weights dataset and the demo's share no patient, study or image (from their plans, before
    anything is rendered): weights trained on one must never have seen the other."""
    from raygen.config import from_dict, load_section
    from raygen.data.demo.build import demo_plans
    from raygen.data.demo.params import DemoParams
    from raygen.stages.download import DownloadParams

    ids = {}
    for profile in ("demo", PROFILE):
        demo = load_section(params, "download", DownloadParams, profile).demo
        plans = demo_plans(from_dict(DemoParams, demo, prefix="download.demo"))
        ids[profile] = {
            "patients": {p.subject_id for p in plans},
            "studies": {p.study_id for p in plans},
            "images": {im.dicom_id for p in plans for im in p.images},
        }
    shared = {kind: len(ids["demo"][kind] & ids[PROFILE][kind]) for kind in ids["demo"]}
    if any(shared.values()):
        raise SystemExit(
            f"raygen demo-weights: error: the {PROFILE} dataset shares ids with the demo's ({shared}); "
            f"change profiles.{PROFILE}.download.demo.seed"
        )
    return {kind: len(values) for kind, values in ids[PROFILE].items()}


def pack(work: Path, out: Path, parts: tuple[str, ...] = tuple(PARTS)) -> None:
    """fp16 copies of the trained parts in ``parts`` in ``out``, then SHA256SUMS over every pinned file (a
    kept part is first checked against the SHA256SUMS it came with)."""
    from raygen.checkpoint import load_checkpoint, save_torch
    from raygen.io import write_text

    kept = [name for part in PARTS if part not in parts for name in PART_FILES[part]]
    for name in kept:
        pinned.verified(out, name)
    results = work / "results"
    if "vqgan" in parts:
        write_text(out / pinned.VQGAN_CONFIG, (results / "vqgan/config.yaml").read_text())
        vqgan = load_checkpoint(results / "vqgan/model.ckpt")
        save_torch({"state_dict": _half(vqgan["state_dict"])}, out / pinned.VQGAN_CHECKPOINT)
    if "fid-network" in parts:
        classifier = load_checkpoint(results / "train_classifier/real/model.ckpt")
        network = {
            "model": _half(classifier["model"]),
            "classifier": classifier["classifier"],
            "resolution": int(classifier["config"]["params"]["resolution"]),
        }
        save_torch(network, out / pinned.FID_NETWORK)
    write_text(out / pinned.SUMS, pinned.write_sums(out))


def _half(state: dict[str, Any]) -> dict[str, Any]:
    """Floating tensors to fp16 (halves the files; the loaders cast back to fp32), others unchanged."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def dataset_record(params: Path, counts: dict[str, int]) -> dict[str, int]:
    """The recipe dataset's seed and size, as provenance.json records it."""
    from raygen.config import from_dict, load_section
    from raygen.data.demo.params import DemoParams
    from raygen.stages.download import DownloadParams

    demo = load_section(params, "download", DownloadParams, PROFILE).demo
    return {"seed": from_dict(DemoParams, demo, prefix="download.demo").seed, **counts}


def kept_provenance(out: Path, parts: tuple[str, ...], dataset: dict[str, int]) -> dict[str, Any]:
    """The provenance the kept parts came with ({} when every part is re-created); refused before any
    training when they were trained on another dataset than the recipe's."""
    if set(parts) == set(PARTS):
        return {}
    path = out / pinned.PROVENANCE
    if not path.is_file():
        raise SystemExit(f"raygen demo-weights: error: --part keeps the other part, but {path} is missing; omit --part")
    kept = json.loads(path.read_text())
    if kept.get("dataset") != dataset:
        raise SystemExit(
            f"raygen demo-weights: error: the kept part was trained on another dataset ({kept.get('dataset')}, "
            f"the recipe's: {dataset}); re-create both parts (no --part)"
        )
    return kept


def provenance(
    params: Path, work: Path, dataset: dict[str, int], parts: tuple[str, ...], kept: dict[str, Any]
) -> dict[str, Any]:
    """What the pinned files are: the commit each was trained at, their params, and what they measured.
    A part not in ``parts`` keeps its entry (and commit) from ``kept``, the provenance it came with."""
    record = {
        "command": pinned.RECREATE,
        "profile": PROFILE,
        "commit": {stage: r.get("commit") for stage, r in json.loads((work / "recipes.json").read_text()).items()},
        "dataset": dataset,
    }
    for part, stage in PARTS.items():
        key = PROVENANCE_KEYS[part]
        if part in parts:
            record[key] = _part_record(params, work, part)
        else:
            record[key], record["commit"][stage] = kept[key], kept["commit"][stage]
    return record


def _part_record(params: Path, work: Path, part: str) -> dict[str, Any]:
    """A re-created part's params and what it measured on its own held-out images."""
    from raygen.config import load_section, to_dict
    from raygen.stages.train_classifier import TrainClassifierParams
    from raygen.stages.vqgan import VqganParams

    results = work / "results"
    if part == "vqgan":
        metrics = json.loads((results / "vqgan/metrics.json").read_text())
        return {
            "params": to_dict(load_section(params, "vqgan", VqganParams, PROFILE)),
            "held_out": {k: metrics.get(k) for k in ("ssim", "psnr", "eval_images", "codebook_perplexity")},
        }
    metrics = json.loads((results / "train_classifier/real/metrics.json").read_text())
    return {
        "params": to_dict(load_section(params, "train_classifier", TrainClassifierParams, PROFILE)),
        "held_out": {k: metrics.get(k) for k in ("val_macro_auroc", "test_macro_auroc", "epochs_run")},
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    counts = check_disjoint(args.params)
    log.info("the %s dataset shares no patient, study or image with the demo's: %s", PROFILE, counts)
    parts = tuple(part for part in PARTS if part in (args.part or PARTS))
    dataset = dataset_record(args.params, counts)
    kept = kept_provenance(args.out, parts, dataset)
    if not run_steps(args.params, args.work, parts):
        return 1
    pack(args.work, args.out, parts)
    write_json(args.out / pinned.PROVENANCE, provenance(args.params, args.work, dataset, parts, kept))
    for line in (args.out / pinned.SUMS).read_text().splitlines():
        log.info("pinned %s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
