"""The dataset root ``DATA`` the download stage fills: the demo dataset, or MIMIC-CXR downloaded / linked.

``DATA/download-complete.json`` is written last, only on success, and says what the tree holds
(``source``: demo | mimic | local); its ``tree`` digest makes it (the stage's DVC out and the next
stages' dep) change whenever the data does. ``DATA/demo-complete.json`` records the demo params the
tree was rendered with, so an unchanged demo is not rendered again.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygen.config import from_dict, to_dict
from raygen.data import physionet as pn
from raygen.data.local_copy import link_jpg, link_reports
from raygen.io import read_json_object, tree_digest, write_json

if TYPE_CHECKING:
    from raygen.stages.download import DownloadParams, MimicParams

log = logging.getLogger(__name__)

COMPLETE = "download-complete.json"
DEMO_COMPLETE = "demo-complete.json"
MARKERS = (COMPLETE, DEMO_COMPLETE)


def build_demo(out: Path, params: DownloadParams) -> dict[str, Any]:
    """Build the demo dataset into ``out`` unless ``demo-complete.json`` records the same params."""
    from raygen.data.demo.build import build_demo_dataset  # heavy (diffdrr); only the demo needs it
    from raygen.data.demo.params import DemoParams

    demo = from_dict(DemoParams, params.demo, prefix="download.demo")
    wanted = json.loads(json.dumps(to_dict(demo), default=str))  # as it reads back from JSON
    marker, complete = out / DEMO_COMPLETE, out / COMPLETE
    previous = read_json_object(marker)
    done = read_json_object(complete)
    if done is not None and done.get("source") != "demo":
        raise pn.PhysioNetError(
            f"{out} holds a MIMIC-CXR {done.get('source')} dataset; build the demo into another --out"
        )
    if previous is not None and previous.get("params") == wanted and done is not None:
        log.info("demo dataset in %s is up to date (same params); nothing to do", out)
        return done
    complete.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    if previous is not None:
        log.info("demo params changed: removing the old demo dataset in %s", out)
        for name in (pn.JPG_PROJECT, pn.REPORTS_PROJECT):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "demo-ground-truth.csv").unlink(missing_ok=True)
    log.info("building the demo dataset in %s with %d workers", out, params.demo_workers)
    result = build_demo_dataset(out, demo, workers=params.demo_workers)
    write_json(marker, {"params": wanted, "summary": result})
    summary = {"source": "demo", "summary": result, "tree": tree_digest(out, contents=True, skip=MARKERS)}
    write_json(complete, summary)
    return summary


def place_mimic(
    out: Path, params: MimicParams, local_jpg: Path | None = None, local_reports: Path | None = None
) -> dict[str, Any]:
    """Place MIMIC-CXR-JPG and reports under ``out`` (linked when a local copy is given, else downloaded);
    write ``download-complete.json`` on success."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    complete = out / COMPLETE
    complete.unlink(missing_ok=True)  # from here until success, the tree does not claim completeness
    client = pn.connect(params) if local_jpg is None or local_reports is None else None
    jpg = link_jpg(out, params, local_jpg) if local_jpg else pn.download_jpg(client, out, params)
    reports = link_reports(out, params, local_reports) if local_reports else pn.download_reports(client, out, params)
    summary = {
        "source": "local" if local_jpg and local_reports else "mimic",
        "groups": list(params.groups),
        "reports_format": "local" if local_reports else params.reports,
        "base_url": params.base_url if client else None,
        # What was checked against SHA256SUMS.txt: downloads when download.mimic.verify says so; a linked
        # copy when it also holds the release's SHA256SUMS.txt (its own entry says which).
        "verified": {
            "jpg": jpg.get("verified", "yes" if params.verify else "no"),
            "reports": reports.get("verified", "yes" if params.verify else "no"),
        },
        "jpg": jpg,
        "reports": reports,
        # Paths and sizes only: hashing hundreds of GB again after every run would cost hours. The
        # contents were checked against SHA256SUMS.txt when `verified` says so.
        "tree": tree_digest(out, contents=False, skip=MARKERS),
    }
    write_json(complete, summary)
    return summary
