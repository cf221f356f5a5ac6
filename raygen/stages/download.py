"""Stage 1, ``download``: build the demo dataset, or download / link MIMIC-CXR-JPG and its reports.

Command line::

    raygen download --out DATA --params params.yaml [--profile P] [--log FILE]
                    [--local-jpg PATH] [--local-reports PATH]

What it does, by ``download.source``:

* ``demo``: renders the MIMIC-CXR-shaped demo dataset into ``DATA`` (``raygen.data.demo``); skipped
  when ``DATA/demo-complete.json`` records identical demo params.
* ``mimic``: downloads from PhysioNet into the layout below (credentials from ``PHYSIONET_USERNAME``
  / ``PHYSIONET_PASSWORD``, ``~/.netrc``, or a prompt). Each release's ``SHA256SUMS.txt`` comes first;
  then the four CSV tables and the images of ``download.mimic.groups``, and the reports (the zip,
  unpacked, or the groups' ``.txt`` files). Downloads resume, are verified and skip verified files
  (``raygen.data.physionet``).
* ``--local-jpg`` / ``--local-reports``: an existing copy is checked and symlinked into the layout
  instead of downloaded (either flag alone links that part and downloads the other;
  ``raygen.data.local_copy``).

Layout (``DATA/download-complete.json`` is written last, only on success; ``raygen.data.dataset_root``)::

    DATA/mimic-cxr-jpg/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg
    DATA/mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz
    DATA/mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from raygen.cli import stage_parser
from raygen.config import ConfigError, load_section
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

STAGE = "download"
VALID_GROUPS = tuple(f"p{i}" for i in range(10, 20))


@dataclasses.dataclass(frozen=True)
class MimicParams:
    """Where and what to fetch from PhysioNet (docs/mimic-cxr.md section 1)."""

    base_url: str = "https://physionet.org/files/"  # PhysioNet's file server; releases below it
    jpg_version: str = "2.0.0"  # MIMIC-CXR-JPG release the paper used
    reports_version: str = "2.0.0"  # MIMIC-CXR (reports) release
    # p10 is about a tenth of the release (~57 GB) and the paper's classifier subset; ["all"] = 570 GB
    groups: list[str] = dataclasses.field(default_factory=lambda: ["p10"])
    reports: Literal["zip", "txt"] = "zip"  # zip: all reports in one ~142 MB file; txt: the groups' .txt only
    verify: bool = True  # check files against SHA256SUMS.txt: downloads, and a linked copy that holds one
    # An existing local copy to link instead of downloading (the pipeline's way; --local-jpg and
    # --local-reports override these for a run by hand). Paths, relative to the working directory.
    local_jpg: str | None = None
    local_reports: str | None = None
    workers: int = 8  # parallel downloads; PhysioNet serves each connection at a few MB/s
    timeout: float = 60.0  # seconds without a byte before a request counts as failed
    retries: int = 5  # extra attempts per file after a connection error, timeout or 5xx
    backoff: float = 2.0  # seconds before the first retry, doubled for each further one

    def __post_init__(self) -> None:
        if not self.groups:
            raise ConfigError("download.mimic.groups: give at least one group (p10..p19) or [all]")
        bad = [g for g in self.groups if g not in (*VALID_GROUPS, "all")]
        if bad or ("all" in self.groups and len(self.groups) > 1):
            raise ConfigError(f"download.mimic.groups: {self.groups!r} must be group folders p10..p19, or [all] alone")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"download.mimic.base_url: {self.base_url!r} is not an http(s) URL")
        if parts.username or parts.password:
            # Never accept credentials in params: they would land in dvc.lock, logs and MLflow.
            raise ConfigError("download.mimic.base_url must not hold credentials; use the environment or ~/.netrc")
        if self.workers < 1 or self.retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ConfigError("download.mimic: workers >= 1, retries >= 0, timeout > 0, backoff >= 0")


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    """The ``download`` section of params.yaml."""

    source: Literal["demo", "mimic"] = "demo"  # demo runs anywhere; mimic needs PhysioNet credentials
    # The demo renderer's own section (raygen.data.demo.DemoParams). Kept as a mapping here and
    # validated strictly when the demo is built, so this stage loads without the renderer installed.
    demo: dict[str, Any] = dataclasses.field(default_factory=dict)
    demo_workers: int = 2  # processes rendering the demo: the 2-core laptop the demo targets
    mimic: MimicParams = dataclasses.field(default_factory=MimicParams)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="dataset root DATA (e.g. data/demo or data/mimic)")
    parser.add_argument(
        "--local-jpg",
        type=Path,
        default=None,
        help="link an existing MIMIC-CXR-JPG copy (version root, its files/ folder, or a wget mirror); "
        "overrides download.mimic.local_jpg",
    )
    parser.add_argument(
        "--local-reports",
        type=Path,
        default=None,
        help="link an existing reports copy (mimic-cxr-reports.zip, a folder with files/ of .txt, or files/); "
        "overrides download.mimic.local_reports",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.data.dataset_root import build_demo, place_mimic
    from raygen.data.physionet import PhysioNetError

    setup_logging(args.log)
    start = time.perf_counter()
    try:
        params = load_section(args.params, STAGE, DownloadParams, args.profile)
        local_jpg = args.local_jpg or _optional_path(params.mimic.local_jpg)
        local_reports = args.local_reports or _optional_path(params.mimic.local_reports)
        if local_jpg or local_reports:
            if params.source == "demo":
                log.info("--local-jpg/--local-reports given: linking MIMIC-CXR although download.source is demo")
            summary = place_mimic(args.out, params.mimic, local_jpg, local_reports)
        elif params.source == "demo":
            summary = build_demo(args.out, params)
        else:
            summary = place_mimic(args.out, params.mimic)
    except (PhysioNetError, ConfigError) as err:
        log.error("download failed: %s", err)
        return 1
    log.info("download finished in %.1f s: %s", time.perf_counter() - start, json.dumps(summary, default=str))
    return 0


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


if __name__ == "__main__":
    raise SystemExit(main())
