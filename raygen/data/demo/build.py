"""Building the embedded demo dataset (:func:`build_demo_dataset`); the package docstring says what it writes."""

from __future__ import annotations

import gzip
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raygen.config import to_dict
from raygen.data.demo.anatomy import Anatomy, load_anatomy
from raygen.data.demo.findings import inject
from raygen.data.demo.params import DemoParams
from raygen.data.demo.render import attenuation, attenuation_update, encode_jpeg, radiograph, sample_geometry
from raygen.data.demo.reports import ReportOptions, make_report
from raygen.data.demo.tables import (
    PlanRates,
    StudyPlan,
    ground_truth_frame,
    label_frame,
    metadata_frame,
    negbio_labels,
    plan_studies,
    relative_jpg,
    relative_report,
    split_frame,
)
from raygen.data.labels import CLASSES
from raygen.io import write_json

__all__ = ["build_demo_dataset", "render_study"]

log = logging.getLogger(__name__)

JPG_ROOT = Path("mimic-cxr-jpg") / "2.0.0"
REPORTS_ROOT = Path("mimic-cxr") / "2.0.0"
GROUND_TRUTH = "demo-ground-truth.csv"
MARKER = "demo-complete.json"


# --------------------------------------------------------------------------------------- rendering

_WORKER: dict[str, Any] = {}  # set in the parent before the fork: anatomy, params, staging root


def _base_mu(anatomy: Anatomy) -> torch.Tensor:
    """Attenuation of the unedited CT, computed once per process (before the fork, so it is shared)."""
    key = id(anatomy)
    if _BASE_MU.get("key") != key:
        _BASE_MU.update(key=key, mu=attenuation(anatomy.hu))
    return _BASE_MU["mu"]


_BASE_MU: dict[str, Any] = {}


def render_study(plan: StudyPlan, anatomy: Anatomy, params: DemoParams) -> list[tuple[str, np.ndarray]]:
    """Render every image of one study: [(dicom_id, (H, W) uint8)], deterministic for (seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, plan.index]))
    hu = inject(anatomy.hu, anatomy, plan.findings, rng, erect=plan.erect)
    mu = attenuation_update(_base_mu(anatomy), anatomy.hu, hu)
    out = []
    for image in plan.images:
        geom = sample_geometry(rng, image.view, params.height_range, params.width_range, plan.habitus)
        out.append((image.dicom_id, radiograph(mu, anatomy, geom, rng, params.depth_groups)))
    return out


def _render_and_write(plan: StudyPlan) -> list[tuple[str, int, int]]:
    torch.set_num_threads(1)  # one core per worker; also keeps float sums identical for any worker count
    anatomy, params, root = _WORKER["anatomy"], _WORKER["params"], _WORKER["root"]
    sizes = []
    for (dicom_id, img), image in zip(render_study(plan, anatomy, params), plan.images):
        path = root / JPG_ROOT / relative_jpg(plan, image)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(img, params.jpeg_quality))
        sizes.append((dicom_id, img.shape[0], img.shape[1]))
    return sizes


def _render_all(plans: list[StudyPlan], workers: int) -> dict[str, tuple[int, int]]:
    from tqdm import tqdm

    sizes: dict[str, tuple[int, int]] = {}
    bar = tqdm(total=len(plans), desc="demo studies", unit="study", smoothing=0.05)
    if workers <= 1:
        results = map(_render_and_write, plans)
        for res in results:
            sizes.update({d: (h, w) for d, h, w in res})
            bar.update()
    else:
        # fork: the prepared CT is shared copy-on-write instead of re-read by every worker.
        with mp.get_context("fork").Pool(workers) as pool:
            for res in pool.imap_unordered(_render_and_write, plans, chunksize=4):
                sizes.update({d: (h, w) for d, h, w in res})
                bar.update()
    bar.close()
    return sizes


# ------------------------------------------------------------------------------------------ tables


def _write_csv_gz(path: Path, frame: Any) -> None:
    """Gzip CSV with a fixed header timestamp, so equal tables give equal bytes."""
    data = frame.to_csv(index=False).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))


def _write_tables(
    root: Path, plans: list[StudyPlan], sizes: dict[str, tuple[int, int]], params: DemoParams, options: ReportOptions
) -> dict[str, Any]:
    chexpert, negbio, keep, sections = [], [], [], Counter()
    for plan in plans:
        rng = np.random.default_rng(np.random.SeedSequence([params.seed, plan.index, 7]))
        report = make_report(rng, plan.findings, plan.views, plan.erect, options)
        path = root / REPORTS_ROOT / relative_report(plan)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.text, encoding="utf-8")
        chexpert.append(report.labels)
        negbio.append(negbio_labels(rng, report.labels))
        keep.append(bool(rng.random() >= params.no_label_rate))
        sections[report.section] += 1
    jpg = root / JPG_ROOT
    meta = metadata_frame(plans, sizes)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", split_frame(plans))
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", label_frame(plans, chexpert, keep))
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-negbio.csv.gz", label_frame(plans, negbio, keep))
    truth = ground_truth_frame(plans)
    truth.to_csv(root / GROUND_TRUTH, index=False)
    return {
        "images": len(meta),
        "views": {k: int(v) for k, v in meta["ViewPosition"].value_counts().sort_index().items()},
        "split_images": {k: int(v) for k, v in split_frame(plans)["split"].value_counts().sort_index().items()},
        "positives": {c: int(truth[c].sum()) for c in CLASSES},
        "normal_studies": int(truth["normal"].sum()),
        "label_rows": int(sum(keep)),
        "labelled_section": dict(sorted(sections.items())),
    }


# ------------------------------------------------------------------------------------------- build


def _move_into_place(staging: Path, out: Path) -> None:
    for name in (JPG_ROOT.parts[0], REPORTS_ROOT.parts[0], GROUND_TRUTH):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(staging / name, target)


def demo_plans(params: DemoParams) -> list[StudyPlan]:
    """Every study the dataset will hold (ids, views, findings), drawn without rendering anything."""
    rates = PlanRates(
        params.normal_rate,
        params.ap_rate,
        params.lateral_rate,
        params.validate_fraction,
        params.test_fraction,
        tuple(params.groups),
    )
    return plan_studies(params.studies, params.patients, params.seed, rates)


def build_demo_dataset(out: Path, params: DemoParams, workers: int = 2) -> dict[str, Any]:
    """Render the demo dataset into ``out`` (see the module docstring); returns summary counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)  # whatever was there is no longer known to be complete
    start = time.perf_counter()
    plans = demo_plans(params)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP pool in the parent before fork (children would deadlock)
    try:
        anatomy = load_anatomy(params.voxel_mm)
        _base_mu(anatomy)
        staging = Path(tempfile.mkdtemp(prefix=".demo-building-", dir=out))
        try:
            _WORKER.update(anatomy=anatomy, params=params, root=staging)
            t_render = time.perf_counter()
            sizes = _render_all(plans, max(1, workers))
            render_s = time.perf_counter() - t_render
            summary = _write_tables(staging, plans, sizes, params, ReportOptions())
            _move_into_place(staging, out)
        finally:
            _WORKER.clear()
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        torch.set_num_threads(threads)
    total_s = time.perf_counter() - start
    summary.update(
        studies=len(plans),
        patients=len({p.subject_id for p in plans}),
        seed=params.seed,
        workers=workers,
        render_seconds=round(render_s, 1),
        total_seconds=round(total_s, 1),
        studies_per_second=round(len(plans) / max(render_s, 1e-9), 2),
    )
    write_json(out / MARKER, {"params": to_dict(params), "summary": summary})
    log.info(
        "demo dataset: %d studies, %d images, %d patients in %.1f s (%.1f studies/s rendering)",
        summary["studies"],
        summary["images"],
        summary["patients"],
        total_s,
        summary["studies_per_second"],
    )
    return summary
