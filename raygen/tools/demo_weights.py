"""``raygen demo-weights``: re-create the demo's pinned VQ-GAN, FID network and decoder in ``weights/demo/``.

Command line::

    raygen demo-weights --out weights/demo [--part decoder] [--work .demo-weights] [--params params.yaml]

It runs the pipeline's own stage commands under two profiles, each the demo's params with another
dataset seed and longer training, in a work folder of its own. Profile ``demo_weights`` makes the
VQ-GAN and the FID network:

1. ``download``: the demo dataset rendered with ``download.demo.seed`` of that profile; its patients
   and images must share nothing with the demo's (checked on the two datasets' plans first);
2. ``sections``, ``cohort``: the same cohort rules as the demo;
3. ``vqgan`` (``source: train``) on the generator-train images;
4. ``train_classifier --arm real`` on the classifier-train images: the FID network;

and packs them into ``--out`` (fp16 weights, UniXGen's layout for the VQ-GAN). Profile
``demo_weights_decoder`` makes the decoder on a larger dataset of its own (``work/decoder/``; also
disjoint from the demo's), with the tokens of the VQ-GAN as packed:

5. ``decoder_download``, ``decoder_sections``, ``decoder_cohort``: that dataset, as 1 and 2;
6. ``install_vqgan``: the demo's own ``vqgan`` stage (profile ``demo``, ``source: demo``) installs it;
7. ``tokenize``, ``embed_text`` on the generator pairs;
8. ``train_decoder`` (``init: scratch``): the pre-trained decoder the demo fine-tunes (``init: demo``);

and packs it (fp16, with the packed VQ-GAN's hash). It writes ``SHA256SUMS``
and ``provenance.json`` (the commit each stage ran at, params, the held-out metrics each measured). A killed run
resumes: a finished stage is skipped, and the VQ-GAN resumes from its training state. A stage whose
params section or source files changed since it ran is run again from scratch, with every stage after
it that depends on it; nothing made by another recipe is reused. Training on a CPU is not
bit-reproducible across machines, so a re-created file has another hash: commit the new SHA256SUMS
with it.

``--part`` re-creates the parts named and keeps the others exactly as they are in ``--out`` (checked
against their SHA256SUMS lines, with their provenance entries carried over). Keeping the FID network
keeps the demo's ruler: numbers measured with it stay comparable across the change. A new VQ-GAN needs
a new decoder (it learned the old one's tokens): ``--part vqgan`` alone is refused.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from raygen.io import write_json
from raygen.models import pinned
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

PROFILE = "demo_weights"  # the VQ-GAN's and FID network's params and dataset
DECODER_PROFILE = "demo_weights_decoder"  # the decoder's: it needs more pairs than the VQ-GAN needs images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raygen demo-weights",
        description="Re-create the demo's pinned VQ-GAN, FID network and decoder (weights/demo/) with RayGen's stages.",
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
        help="re-create only this part (repeatable; default: all three); the others stay as they are in --out",
    )
    parser.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    return parser


# The two datasets' steps: the VQ-GAN's and FID network's, and the decoder's (the same stages, named apart).
DATASET = ("download", "sections", "cohort")
DECODER_PREFIX = "decoder_"
DECODER_DATASET = tuple(DECODER_PREFIX + name for name in DATASET)
# The decoder's steps read the packed VQ-GAN and FID network, so they run after those are packed.
AFTER_PACKING = ("install_vqgan", "tokenize", "embed_text", "train_decoder")

# Each pinned part: the steps that make it, the profile of its params and dataset, its provenance entry, its files.
PARTS = {
    "vqgan": (*DATASET, "vqgan"),
    "fid-network": (*DATASET, "train_classifier"),
    "decoder": (*DECODER_DATASET, *AFTER_PACKING),
}
PART_PROFILES = {"vqgan": PROFILE, "fid-network": PROFILE, "decoder": DECODER_PROFILE}
PROVENANCE_KEYS = {"vqgan": "vqgan", "fid-network": "fid_network", "decoder": "decoder"}
PART_FILES = {
    "vqgan": (pinned.VQGAN_CONFIG, pinned.VQGAN_CHECKPOINT),
    "fid-network": (pinned.FID_NETWORK,),
    "decoder": (pinned.DECODER,),
}

# Each step's upstream steps: a step runs again when its own recipe changed or an upstream step ran.
UPSTREAM = {
    "download": (),
    "sections": ("download",),
    "cohort": ("download", "sections"),
    "vqgan": DATASET,
    "train_classifier": DATASET,
    "decoder_download": (),
    "decoder_sections": ("decoder_download",),
    "decoder_cohort": ("decoder_download", "decoder_sections"),
    "install_vqgan": DECODER_DATASET,  # and the packed files, in its recipe
    "tokenize": (*DECODER_DATASET, "install_vqgan"),
    "embed_text": DECODER_DATASET,
    "train_decoder": (*DECODER_DATASET, "install_vqgan", "tokenize", "embed_text"),
}


@dataclass(frozen=True)
class Step:
    stage: str  # the step's name (a pipeline stage's, or install_vqgan)
    done: Path  # written last by the stage: the step finished
    out: Path  # everything the step writes, removed before it runs on another recipe
    command: list[str]
    runs: str | None = None  # the pipeline stage it runs, when not its name
    profile: str = PROFILE  # the params profile it runs under
    reads_packed: tuple[str, ...] = ()  # pinned files in --out it reads: their hashes are part of its recipe

    @property
    def pipeline_stage(self) -> str:
        """The pipeline stage whose command, params section and source files the step uses."""
        return self.runs or self.stage


class Commands:
    """Builds the steps of one profile's dataset and training: each a pipeline stage command under that
    profile, logging to ``<root>/logs/<step>.log`` and writing to ``<root>/results/<step>/``. ``prefix``
    names its dataset's steps apart from another profile's."""

    def __init__(self, params: Path, root: Path, profile: str = PROFILE, prefix: str = "") -> None:
        self.params, self.root, self.profile, self.prefix = params, root, profile, prefix
        self.data, self.results = root / "data", root / "results"
        self.jpg = self.data / "mimic-cxr-jpg/2.0.0"
        self.generator = self.results / "cohort/generator.csv"

    def cmd(self, stage: str, *args: Any, profile: str | None = None, log_name: str | None = None) -> list[str]:
        head = [sys.executable, "-m", "raygen", stage, "--params", str(self.params), "--profile"]
        log_file = self.root / "logs" / f"{log_name or stage}.log"
        return [*head, profile or self.profile, "--log", str(log_file), *map(str, args)]

    def step(self, key: str, done: str, *args: Any, **how: Any) -> Step:
        """Step ``key`` into ``results/<key>``; ``how``: :class:`Step`'s ``runs``, ``profile``, ``reads_packed``."""
        folder = self.results / key
        step = Step(key, folder / done, folder, [], **{"profile": self.profile, **how})
        command = self.cmd(step.pipeline_stage, *args, "--out", folder, profile=step.profile, log_name=key)
        return replace(step, command=command)

    def dataset_step(self, stage: str, done: Path, out: Path, *args: Any) -> Step:
        """A dataset step: ``stage`` under this profile, named with the prefix."""
        command = self.cmd(stage, *args, log_name=stage)
        return Step(self.prefix + stage, done, out, command, runs=stage, profile=self.profile)


def stage_commands(params: Path, work: Path, out: Path = Path("weights/demo")) -> list[Step]:
    """The recipe's steps, in order: the first dataset, the VQ-GAN and FID network, then the decoder's
    dataset (in ``work/decoder``) and the decoder."""
    c = Commands(params, work)
    classifier = c.results / "train_classifier/real"
    decoder = Commands(params, part_root(work, "decoder"), DECODER_PROFILE, DECODER_PREFIX)
    return [
        *dataset_steps(c),
        c.step("vqgan", "metrics.json", "--manifest", c.generator, "--jpg-root", c.jpg),
        Step(
            "train_classifier",
            classifier / "metrics.json",
            classifier,
            c.cmd(
                "train_classifier",
                *("--manifest", c.results / "cohort/classifier.csv", "--jpg-root", c.jpg),
                *("--arm", "real", "--out", classifier),
            ),
        ),
        *dataset_steps(decoder),
        *decoder_steps(decoder, out),
    ]


def dataset_steps(c: Commands) -> list[Step]:
    """Render ``c``'s profile's demo dataset, section its reports, and draw the demo's cohort from it."""
    sections = c.results / "sections"
    return [
        c.dataset_step("download", c.data / "download-complete.json", c.data, "--out", c.data),
        c.dataset_step(
            "sections",
            sections / "prompts.csv",
            sections,
            *("--reports-root", c.data / "mimic-cxr/2.0.0"),
            *("--out", sections / "mimic_cxr_sectioned.csv", "--prompts", sections / "prompts.csv"),
        ),
        c.dataset_step(
            "cohort",
            c.results / "cohort/counts.json",
            c.results / "cohort",
            *("--jpg-root", c.jpg, "--sections", sections / "prompts.csv"),
            *("--ground-truth", c.data / "demo-ground-truth.csv", "--out", c.results / "cohort"),
        ),
    ]


def decoder_steps(c: Commands, out: Path) -> list[Step]:
    """The decoder's steps: it learns the tokens of the VQ-GAN packed in ``out``, installed by the demo's
    own ``vqgan`` stage (profile demo, ``source: demo``), as every demo run installs it."""
    installed, generator = c.results / "install_vqgan", c.generator
    return [
        c.step(
            "install_vqgan",
            "metrics.json",
            *("--manifest", generator, "--jpg-root", c.jpg, "--demo-weights", out),
            runs="vqgan",
            profile="demo",
            reads_packed=(*PART_FILES["vqgan"], pinned.FID_NETWORK),
        ),
        c.step("tokenize", "meta.json", "--vqgan", installed, "--manifests", generator, "--jpg-root", c.jpg),
        c.step("embed_text", "meta.json", "--prompts", generator),
        c.step(
            "train_decoder",
            "metrics.json",
            *("--tokens", c.results / "tokenize", "--text", c.results / "embed_text"),
            *("--manifest", generator, "--vqgan", installed),
        ),
    ]


def stage_recipe(raw: dict[str, Any], step: Step, out: Path | None = None) -> dict[str, Any]:
    """What a step's result depends on: its stage's params section under its profile, its stage's source
    files, and the hashes of the packed files it reads from ``out``."""
    import hashlib

    from raygen.config import scientific_section
    from raygen.pipeline.code_deps import REPO, stage_code_deps

    code = hashlib.sha256()
    for path in stage_code_deps(step.pipeline_stage):
        code.update(path.encode() + b"\0" + (REPO / path).read_bytes())
    recipe = {"params": scientific_section(raw, step.pipeline_stage, step.profile), "code": code.hexdigest()}
    if step.reads_packed:
        sums = pinned.read_sums(out)
        recipe["packed"] = {name: sums.get(name) for name in step.reads_packed}
    return json.loads(json.dumps(recipe))


def run_steps(params: Path, work: Path, steps: list[Step], out: Path, ran: set[str]) -> bool:
    """Run each of ``steps`` whose recipe (params, code) changed, that never finished, or whose upstream
    ran (``ran``, updated); skip the others. A step of another recipe is removed first, so nothing stale
    is ever reused; a step killed under the same recipe keeps its folder and resumes. Returns False when
    a step failed."""
    from raygen.config import read_params

    raw = read_params(params)
    record_path = work / "recipes.json"
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for step in steps:
        recipe = stage_recipe(raw, step, out)
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
            log.error("%s failed; see its log (--log above). Run the same command again to resume.", step.stage)
            return False
        recorded[step.stage] |= {"finished": True, "commit": _commit()}
        write_json(record_path, recorded)
        ran.add(step.stage)
    return True


def recipe_steps(params: Path, work: Path, out: Path, parts: tuple[str, ...]) -> tuple[list[Step], list[Step]]:
    """The steps ``parts`` need, split at packing: those before, and the decoder's, which read the packed files."""
    wanted = {name for part in parts for name in PARTS[part]}
    steps = [step for step in stage_commands(params, work, out) if step.stage in wanted]
    return [s for s in steps if s.stage not in AFTER_PACKING], [s for s in steps if s.stage in AFTER_PACKING]


def _commit() -> str | None:
    """HEAD, marked ``-dirty`` when tracked files differ from it (the recipe's source hash says exactly
    which files a stage ran with; the commit says where to find them). Asked of the checkout the stages'
    code comes from, wherever the tool runs."""
    from raygen.pipeline.code_deps import REPO

    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], capture_output=True).returncode != 0
    return f"{head}-dirty" if head and dirty else head or None


def check_disjoint(params: Path) -> dict[str, dict[str, int]]:
    """Each recipe profile's dataset and the demo's share no patient, study or image (from their plans,
    before anything is rendered): weights trained on one must never have seen the other. Returns each
    recipe dataset's counts, by profile."""
    demo = _dataset_ids(params, "demo")
    counts = {}
    for profile in (PROFILE, DECODER_PROFILE):
        ids = _dataset_ids(params, profile)
        shared = {kind: len(demo[kind] & ids[kind]) for kind in demo}
        if any(shared.values()):
            raise SystemExit(
                f"raygen demo-weights: error: the {profile} dataset shares ids with the demo's ({shared}); "
                f"change profiles.{profile}.download.demo.seed"
            )
        counts[profile] = {kind: len(values) for kind, values in ids.items()}
    return counts


def _dataset_ids(params: Path, profile: str) -> Mapping[str, frozenset[Any]]:
    """The patient, study and image ids of ``profile``'s demo dataset, from its plan."""
    return _plan_ids(_demo_params(params, profile))


@functools.lru_cache(maxsize=8)
def _plan_ids(demo: Any) -> Mapping[str, frozenset[Any]]:
    """Cached: drawing a large plan is slow, and a plan depends on its (frozen) params alone. Read-only,
    since every caller shares the cached answer."""
    from raygen.data.demo.build import demo_plans

    plans = demo_plans(demo)
    return MappingProxyType(
        {
            "patients": frozenset(p.subject_id for p in plans),
            "studies": frozenset(p.study_id for p in plans),
            "images": frozenset(im.dicom_id for p in plans for im in p.images),
        }
    )


def _demo_params(params: Path, profile: str) -> Any:
    """``profile``'s ``download.demo`` section, checked."""
    from raygen.config import from_dict, load_section
    from raygen.data.demo.params import DemoParams
    from raygen.stages.download import DownloadParams

    demo = load_section(params, "download", DownloadParams, profile).demo
    return from_dict(DemoParams, demo, prefix="download.demo")


def part_root(work: Path, part: str) -> Path:
    """Where ``part``'s dataset and stage outputs live in the work folder."""
    return work / "decoder" if PART_PROFILES[part] == DECODER_PROFILE else work


def pack(work: Path, out: Path, parts: tuple[str, ...] = tuple(PARTS)) -> None:
    """fp16 copies of the trained VQ-GAN and FID network in ``out`` (those in ``parts``), then SHA256SUMS
    over every pinned file (a kept part is first checked against the SHA256SUMS it came with)."""
    from raygen.checkpoint import load_checkpoint, save_torch
    from raygen.io import write_text

    kept = [name for part in PARTS if part not in parts for name in PART_FILES[part] if (out / name).exists()]
    for name in kept:
        pinned.verified(out, name)
    results = work / "results"
    if "vqgan" in parts:
        write_text(out / pinned.VQGAN_CONFIG, (results / "vqgan/config.yaml").read_text())
        vqgan = load_checkpoint(results / "vqgan/model.ckpt")
        save_torch({"state_dict": pinned.half_floats(vqgan["state_dict"])}, out / pinned.VQGAN_CHECKPOINT)
    if "fid-network" in parts:
        classifier = load_checkpoint(results / "train_classifier/real/model.ckpt")
        network = {
            "model": pinned.half_floats(classifier["model"]),
            "classifier": classifier["classifier"],
            "resolution": int(classifier["config"]["params"]["resolution"]),
        }
        save_torch(network, out / pinned.FID_NETWORK)
    write_text(out / pinned.SUMS, pinned.write_sums(out))


def pack_decoder(work: Path, out: Path) -> None:
    """The pre-trained decoder in ``out`` (fp16, with the hash of the packed VQ-GAN whose tokens it
    learned), then SHA256SUMS."""
    from raygen.checkpoint import load_checkpoint, save_torch
    from raygen.io import write_text
    from raygen.training.pinned_decoder import pack_decoder as packed

    checkpoint = load_checkpoint(part_root(work, "decoder") / "results/train_decoder/model.ckpt")
    vqgan_sha256 = pinned.read_sums(out)[pinned.VQGAN_CHECKPOINT]
    save_torch(packed(checkpoint, vqgan_sha256), out / pinned.DECODER)
    write_text(out / pinned.SUMS, pinned.write_sums(out))


def check_parts(out: Path, parts: tuple[str, ...]) -> None:
    """A new VQ-GAN with the old decoder is refused: the decoder learned the old one's tokens."""
    if "vqgan" in parts and "decoder" not in parts and (out / pinned.DECODER).exists():
        raise SystemExit(
            "raygen demo-weights: error: a new VQ-GAN makes the pinned decoder's tokens stale; "
            "re-create it too (--part vqgan --part decoder)"
        )


def dataset_records(params: Path, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Each part's dataset, its seed and size, as provenance.json records it."""
    seeds = {profile: _demo_params(params, profile).seed for profile in counts}
    return {part: {"seed": seeds[profile], **counts[profile]} for part, profile in PART_PROFILES.items()}


def kept_provenance(out: Path, parts: tuple[str, ...], datasets: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The provenance the kept parts came with ({} when every part is re-created); refused before any
    training when a kept part was trained on another dataset than its recipe's."""
    if set(parts) == set(PARTS):
        return {}
    path = out / pinned.PROVENANCE
    if not path.is_file():
        raise SystemExit(f"raygen demo-weights: error: --part keeps other parts, but {path} is missing; omit --part")
    kept = json.loads(path.read_text())
    for part in PARTS:
        found = (kept.get(PROVENANCE_KEYS[part]) or {}).get("dataset")
        if part not in parts and found != datasets[part]:
            raise SystemExit(
                f"raygen demo-weights: error: the kept {part} was trained on another dataset ({found}, the "
                f"recipe's: {datasets[part]}); re-create it too (--part {part})"
            )
    return kept


def provenance(
    params: Path, work: Path, datasets: dict[str, dict[str, int]], parts: tuple[str, ...], kept: dict[str, Any]
) -> dict[str, Any]:
    """What the pinned files are: the commit each was trained at, their profile, dataset and params, and
    what they measured. A part not in ``parts`` keeps its entry (and commits) from ``kept``, the provenance
    it came with."""
    record = {
        "command": pinned.RECREATE,
        "commit": {stage: r.get("commit") for stage, r in json.loads((work / "recipes.json").read_text()).items()},
    }
    remade = {step for part in parts for step in PARTS[part]}  # with the dataset a kept part may share
    for part, steps in PARTS.items():
        key = PROVENANCE_KEYS[part]
        if part in parts:
            record[key] = {"dataset": datasets[part], **_part_record(params, work, part)}
            continue
        record[key] = kept.get(key)
        for step in set(steps) - remade:
            record["commit"][step] = kept.get("commit", {}).get(step)
    return record


def _part_record(params: Path, work: Path, part: str) -> dict[str, Any]:
    """A re-created part's profile, params and what it measured on its own held-out images."""
    from raygen.config import load_section, to_dict
    from raygen.stages.train_classifier import TrainClassifierParams
    from raygen.stages.train_decoder import TrainDecoderParams
    from raygen.stages.vqgan import VqganParams

    stage, section, keys = {
        "vqgan": ("vqgan", VqganParams, ("ssim", "psnr", "eval_images", "codebook_perplexity")),
        "fid-network": (
            "train_classifier/real",
            TrainClassifierParams,
            ("val_macro_auroc", "test_macro_auroc", "epochs_run"),
        ),
        "decoder": (
            "train_decoder",
            TrainDecoderParams,
            ("val_loss", "val_masked_accuracy", "train_loss", "train_loop_s"),
        ),
    }[part]
    profile = PART_PROFILES[part]
    metrics = json.loads((part_root(work, part) / "results" / stage / "metrics.json").read_text())
    return {
        "profile": profile,
        "params": to_dict(load_section(params, stage.split("/")[0], section, profile)),
        "held_out": {k: metrics.get(k) for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    counts = check_disjoint(args.params)
    for profile, sizes in counts.items():
        log.info("the %s dataset shares no patient, study or image with the demo's: %s", profile, sizes)
    parts = tuple(part for part in PARTS if part in (args.part or PARTS))
    datasets = dataset_records(args.params, counts)
    check_parts(args.out, parts)
    kept = kept_provenance(args.out, parts, datasets)
    before_packing, decoder_steps = recipe_steps(args.params, args.work, args.out, parts)
    ran: set[str] = set()
    if not run_steps(args.params, args.work, before_packing, args.out, ran):
        return 1
    pack(args.work, args.out, parts)
    if not run_steps(args.params, args.work, decoder_steps, args.out, ran):
        return 1
    if "decoder" in parts:
        pack_decoder(args.work, args.out)
    write_json(args.out / pinned.PROVENANCE, provenance(args.params, args.work, datasets, parts, kept))
    for line in (args.out / pinned.SUMS).read_text().splitlines():
        log.info("pinned %s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
