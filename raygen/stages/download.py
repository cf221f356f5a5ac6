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
  unpacked, or the groups' ``.txt`` files). Downloads resume, are verified and skip verified files.
* ``--local-jpg`` / ``--local-reports``: an existing copy is checked and symlinked into the layout
  instead of downloaded (either flag alone links that part and downloads the other).

Layout (``DATA/download-complete.json`` is written last, only on success)::

    DATA/mimic-cxr-jpg/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg
    DATA/mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz
    DATA/mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT.txt
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from raygen.cli import stage_parser
from raygen.config import ConfigError, from_dict, load_section, to_dict
from raygen.data import physionet as pn
from raygen.io import tree_digest, write_json
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

COMPLETE = "download-complete.json"
DEMO_COMPLETE = "demo-complete.json"
MARKERS = (COMPLETE, DEMO_COMPLETE)
UNPACKED = ".reports-unpacked.json"  # at the reports root: which zip the files/ tree came from
VALID_GROUPS = tuple(f"p{i}" for i in range(10, 20))


@dataclasses.dataclass(frozen=True)
class MimicParams:
    """Where and what to fetch from PhysioNet (mimic-cxr.md section 1)."""

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


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("download", __doc__)
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
    args = parser.parse_args(argv)
    setup_logging(args.log)
    start = time.perf_counter()
    try:
        params = load_section(args.params, "download", DownloadParams, args.profile)
        local_jpg = args.local_jpg or _optional_path(params.mimic.local_jpg)
        local_reports = args.local_reports or _optional_path(params.mimic.local_reports)
        if local_jpg or local_reports:
            if params.source == "demo":
                log.info("--local-jpg/--local-reports given: linking MIMIC-CXR although download.source is demo")
            summary = run_mimic(args.out, params.mimic, local_jpg, local_reports)
        elif params.source == "demo":
            summary = run_demo(args.out, params)
        else:
            summary = run_mimic(args.out, params.mimic)
    except (pn.PhysioNetError, ConfigError) as err:
        log.error("download failed: %s", err)
        return 1
    log.info("download finished in %.1f s: %s", time.perf_counter() - start, json.dumps(summary, default=str))
    return 0


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


# --------------------------------------------------------------------------------------------------
# demo


def run_demo(out: Path, params: DownloadParams) -> dict[str, Any]:
    """Build the demo dataset into ``out`` unless ``demo-complete.json`` records the same params."""
    from raygen.data.demo import DemoParams, build_demo_dataset  # heavy (diffdrr); only the demo needs it

    demo = from_dict(DemoParams, params.demo, prefix="download.demo")
    wanted = json.loads(json.dumps(to_dict(demo), default=str))  # as it reads back from JSON
    marker, complete = out / DEMO_COMPLETE, out / COMPLETE
    previous = _read_json(marker)
    done = _read_json(complete)
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
    # The tree's digest makes the marker (the stage's DVC out and the next stages' dep) change
    # whenever the data does.
    summary = {"source": "demo", "summary": result, "tree": tree_digest(out, contents=True, skip=MARKERS)}
    write_json(complete, summary)
    return summary


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR: download and/or link


def run_mimic(
    out: Path, params: MimicParams, local_jpg: Path | None = None, local_reports: Path | None = None
) -> dict[str, Any]:
    """Place MIMIC-CXR-JPG and reports under ``out``; write ``download-complete.json`` on success."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    complete = out / COMPLETE
    complete.unlink(missing_ok=True)  # from here until success, the tree does not claim completeness
    client = None
    if local_jpg is None or local_reports is None:
        host = urlsplit(params.base_url).hostname or "physionet.org"
        creds = pn.resolve_credentials(host)
        # Where the credentials came from, never the username or password: logs are shared more than data.
        log.info("PhysioNet credentials from %s", creds.source)
        client = pn.PhysioNetClient(params.base_url, creds, params.timeout, params.retries, params.backoff)
    jpg = link_jpg(out, params, local_jpg) if local_jpg else download_jpg(client, out, params)
    reports = link_reports(out, params, local_reports) if local_reports else download_reports(client, out, params)
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


def download_jpg(client: pn.PhysioNetClient, out: Path, params: MimicParams) -> dict[str, Any]:
    """Fetch the JPG release's CSV tables and the chosen groups' images."""
    root = out / pn.JPG_PROJECT / params.jpg_version
    sums = pn.fetch_sums(client, pn.JPG_PROJECT, params.jpg_version, root)
    rels = pn.select_jpg_files(sums, params.jpg_version, params.groups)
    log.info(
        "%s %s: %d files selected (4 tables + %d images in %s)",
        pn.JPG_PROJECT,
        params.jpg_version,
        len(rels),
        len(rels) - len(pn.JPG_CSVS),
        ",".join(params.groups),
    )
    res = pn.download_release(
        client, pn.JPG_PROJECT, params.jpg_version, root, rels, sums, params.verify, params.workers
    )
    _log_release(res)
    return {"mode": "download", **dataclasses.asdict(res)}


def download_reports(client: pn.PhysioNetClient, out: Path, params: MimicParams) -> dict[str, Any]:
    """Fetch the reports: the zip (then unpack it) or the chosen groups' ``.txt`` files."""
    root = out / pn.REPORTS_PROJECT / params.reports_version
    sums = pn.fetch_sums(client, pn.REPORTS_PROJECT, params.reports_version, root)
    if params.reports == "txt":
        rels = pn.select_report_txts(sums, params.reports_version, params.groups)
    else:
        rels = [pn.REPORTS_ZIP]
    res = pn.download_release(
        client, pn.REPORTS_PROJECT, params.reports_version, root, rels, sums, params.verify, params.workers
    )
    _log_release(res)
    info: dict[str, Any] = {"mode": "download", **dataclasses.asdict(res)}
    if params.reports == "zip":
        info["reports"] = unpack_if_needed(root / pn.REPORTS_ZIP, root)
    return info


def unpack_if_needed(zip_path: Path, root: Path) -> int:
    """Unpack the reports zip into ``root/files`` unless that exact zip (size + mtime) was unpacked already."""
    st = zip_path.stat()
    stamp = {"zip": str(zip_path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    previous = _read_json(root / UNPACKED)
    if previous is not None and (root / "files").is_dir() and {k: previous.get(k) for k in stamp} == stamp:
        log.info("reports already unpacked from %s", zip_path.name)
        return int(previous.get("reports", 0))
    t0 = time.perf_counter()
    count = pn.unpack_reports_zip(zip_path, root)
    log.info("unpacked %d reports from %s in %.1f s", count, zip_path.name, time.perf_counter() - t0)
    write_json(root / UNPACKED, {**stamp, "reports": count})
    return count


def link_jpg(out: Path, params: MimicParams, local: Path) -> dict[str, Any]:
    """Symlink an existing MIMIC-CXR-JPG copy's ``files/`` and CSV tables into the layout."""
    src = pn.find_jpg_root(local, params.jpg_version)
    groups = _check_local_groups(src / "files", params.groups, "--local-jpg")
    verified = _verify_local(src, params, lambda sums: pn.select_jpg_files(sums, params.jpg_version, params.groups))
    links = {"files": src / "files", **{c: src / c for c in pn.JPG_CSVS}}
    pn.link_tree(out / pn.JPG_PROJECT / params.jpg_version, links)
    log.info("linked MIMIC-CXR-JPG from %s (groups %s)", src, ",".join(groups))
    return {"mode": "local", "path": str(src), "groups_present": groups, "verified": verified}


def _verify_local(root: Path, params: MimicParams, select) -> str:
    """Check a local copy against the SHA256SUMS.txt beside it; say what was checked (for the marker)."""
    sums_file = root / pn.SUMS_FILE
    if not params.verify:
        return "no: download.mimic.verify is false"
    if not sums_file.is_file():
        return f"no: {root} holds no {pn.SUMS_FILE}"
    sums = pn.parse_sha256sums(sums_file.read_text())
    count = pn.verify_local_copy(root, select(sums), sums, params.workers)
    log.info("verified %d files of %s against %s", count, root, pn.SUMS_FILE)
    return f"yes: {count} files against {pn.SUMS_FILE}"


def link_reports(out: Path, params: MimicParams, local: Path) -> dict[str, Any]:
    """Symlink an existing reports ``files/`` folder into the layout, or unpack a local zip."""
    src = pn.find_reports_source(local, params.reports_version)
    root = out / pn.REPORTS_PROJECT / params.reports_version
    # A release copy keeps SHA256SUMS.txt beside the zip, or beside its files/ folder.
    if src.is_file():
        verified = _verify_local(src.parent, params, lambda sums: [src.name])
        count = unpack_if_needed(src, root)
        return {"mode": "local-zip", "path": str(src), "reports": count, "verified": verified}
    groups = _check_local_groups(src, params.groups, "--local-reports")
    verified = _verify_local(
        src.parent, params, lambda sums: pn.select_report_txts(sums, params.reports_version, params.groups)
    )
    pn.link_tree(root, {"files": src})
    log.info("linked MIMIC-CXR reports from %s (groups %s)", src, ",".join(groups))
    return {"mode": "local", "path": str(src), "groups_present": groups, "verified": verified}


def _check_local_groups(files_dir: Path, groups: list[str], flag: str) -> list[str]:
    present = pn.group_dirs(files_dir)
    missing = [] if "all" in groups else [g for g in groups if g not in present]
    if missing:
        raise pn.PhysioNetError(
            f"{flag}: {files_dir} lacks the group folder(s) {', '.join(missing)} that download.mimic.groups "
            f"asks for (present: {', '.join(present) or 'none'})"
        )
    return present


def _log_release(res: pn.ReleaseResult) -> None:
    log.info(
        "%s %s: %d files, %d downloaded (%.1f MB), %d already verified/present%s",
        res.project,
        res.version,
        res.files,
        res.downloaded,
        res.bytes / 1e6,
        res.skipped,
        f", {res.unverified} without checksum" if res.unverified else "",
    )


if __name__ == "__main__":
    raise SystemExit(main())
