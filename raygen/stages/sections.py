"""Stage ``sections``: split every radiology report into sections and pick each study's prompt text.

Command line::

    raygen sections --reports-root DATA/mimic-cxr/2.0.0 \\
        --out results/sections/mimic_cxr_sectioned.csv [--prompts results/sections/prompts.csv] \\
        --params params.yaml [--profile demo] --log logs/sections.log

``--reports-root`` is a folder holding ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt`` (or that ``files/`` folder
itself), or ``mimic-cxr-reports.zip`` (members are read one by one, nothing is extracted), or a folder
holding that zip.

Outputs (atomic writes):

- ``--out``: the official ``mimic_cxr_sectioned.csv`` columns ``study,impression,findings,
  last_paragraph,comparison`` (``study`` keeps its ``s`` prefix; the LAST occurrence of each section,
  stripped, empty when absent), one row per readable, non-empty report, in path order;
- ``--prompts`` (default ``prompts.csv`` beside ``--out``): ``study_id,subject_id,text,source``, the
  cleaned text of the first present section in ``sections.prompt_fallback`` order, one row per study
  that has one (the paper: impression only, studies without one are not prompted);
- ``summary.json`` beside ``--out``: counts of files found, parsed, unreadable, invalid UTF-8, empty,
  without any usable section, prompts per source, notification text removed, rate.

Unreadable files, invalid UTF-8 and empty files are counted, logged and skipped, never fatal.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import re
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from raygen.cli import stage_parser
from raygen.config import ConfigError, load_section, to_dict
from raygen.data.reports import (
    CSV_HEADER,
    CUSTOM_RULES,
    SECTIONED_COLUMNS,
    Prompt,
    apply_custom_rule,
    choose_prompt,
    clean_prompt_text,
    decode_report,
    last_sections,
    split_sections,
)
from raygen.io import write_csv, write_json
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

PROMPT_COLUMNS = ("study_id", "subject_id", "text", "source")
STATUSES = ("ok", "unreadable", "invalid_utf8", "empty")
_MAX_EXAMPLES = 20  # paths listed per problem in summary.json

_GROUP_RE = re.compile(r"p\d{2}")
_PATIENT_RE = re.compile(r"p(\d+)")
_STUDY_RE = re.compile(r"(s\d+)\.txt")
_MEMBER_RE = re.compile(r"(?:^|/)p\d{2}/p(\d+)/(s\d+)\.txt$")


@dataclass(frozen=True)
class SectionsParams:
    """The ``sections`` section of params.yaml."""

    # Sections tried in order for the prompt text. The paper prompts with the impression only and drops
    # studies without one (mimic-cxr.md section 5); the official order is impression, findings,
    # last_paragraph, comparison.
    prompt_fallback: list[str] = field(default_factory=lambda: ["impression"])
    # Remove appended communication text ("NOTIFICATION: ...", "These findings were discussed with
    # Dr. ___ at ..."): it says who was called, not what the image shows; the original code kept it.
    strip_notification: bool = True
    # Parser processes; 1 = in-process, 0 = one per CPU. Reading ~228k small files dominates, so a
    # pool helps mostly on fast disks and more cores (measured rates in the stage log).
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.prompt_fallback:
            raise ConfigError("sections.prompt_fallback: needs at least one section name")
        unknown = [s for s in self.prompt_fallback if s not in SECTIONED_COLUMNS]
        if unknown:
            raise ConfigError(
                f"sections.prompt_fallback: unknown section(s) {unknown}; choose from {list(SECTIONED_COLUMNS)}"
            )
        if len(set(self.prompt_fallback)) != len(self.prompt_fallback):
            raise ConfigError(f"sections.prompt_fallback: repeated names in {self.prompt_fallback}")
        if self.workers < 0:
            raise ConfigError(f"sections.workers: must be >= 0, got {self.workers}")


# --------------------------------------------------------------------------------------------------
# Finding and reading reports
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRef:
    """One report file: ``study`` (``s5...``), ``subject_id`` (from the ``pNNNNNNNN`` folder), and
    ``locator``: the path relative to the files root, or the zip member name."""

    study: str
    subject_id: int
    locator: str


@dataclass(frozen=True)
class ReportSource:
    """Where reports are read from: ``kind`` ``dir`` (``root`` is the ``files/`` folder) or ``zip``."""

    kind: str
    root: Path

    def read(self, ref: ReportRef) -> bytes:
        """The raw bytes of one report (raises ``OSError`` / ``zipfile.BadZipFile`` when unreadable)."""
        if self.kind == "zip":
            return _open_zip(str(self.root)).read(ref.locator)
        return (self.root / ref.locator).read_bytes()


# Open zip handles by (process id, path): a forked pool worker opens its own instead of sharing the
# parent's file offset.
_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), path)
    if key not in _ZIPS:
        _ZIPS[key] = zipfile.ZipFile(path)
    return _ZIPS[key]


def _close_zips() -> None:
    for key in [k for k in _ZIPS if k[0] == os.getpid()]:
        _ZIPS.pop(key).close()


def resolve_source(root: Path) -> ReportSource:
    """Interpret ``--reports-root``: a zip, a folder with ``files/``, a ``files/`` folder, or a folder
    holding ``mimic-cxr-reports.zip``."""
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise FileNotFoundError(f"{root} is a file but not a zip archive of reports")
        return ReportSource("zip", root)
    if not root.is_dir():
        raise FileNotFoundError(f"reports root not found: {root}")
    if (root / "files").is_dir():
        return ReportSource("dir", root / "files")
    if any(_GROUP_RE.fullmatch(e.name) and e.is_dir() for e in os.scandir(root)):
        return ReportSource("dir", root)
    if (root / "mimic-cxr-reports.zip").is_file():
        return ReportSource("zip", root / "mimic-cxr-reports.zip")
    raise FileNotFoundError(
        f"no reports under {root}: expected files/pXX/pNNNNNNNN/sNNNNNNNN.txt, a pXX folder, or "
        "mimic-cxr-reports.zip (https://physionet.org/files/mimic-cxr/2.0.0/)"
    )


def list_reports(source: ReportSource) -> list[ReportRef]:
    """Every report of ``source`` in path order (group, patient, study), deterministic."""
    if source.kind == "zip":
        with zipfile.ZipFile(source.root) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
        refs = []
        for name in names:
            m = _MEMBER_RE.search(name)
            if m:
                refs.append(ReportRef(m.group(2), int(m.group(1)), name))
        return sorted(refs, key=lambda r: r.locator)
    return list(_walk_files(source.root))


def _walk_files(root: Path) -> Iterator[ReportRef]:
    for group in _sorted_entries(root, _GROUP_RE, dirs=True):
        for patient in _sorted_entries(Path(group.path), _PATIENT_RE, dirs=True):
            subject_id = int(patient.name[1:])
            for study in _sorted_entries(Path(patient.path), _STUDY_RE, dirs=False):
                locator = f"{group.name}/{patient.name}/{study.name}"
                yield ReportRef(study.name[:-4], subject_id, locator)


def _sorted_entries(folder: Path, pattern: re.Pattern[str], dirs: bool) -> list[os.DirEntry]:
    # Files are kept even when they are not regular files (a dangling link), so that an unreadable
    # report is counted instead of silently missing.
    with os.scandir(folder) as it:
        entries = [e for e in it if pattern.fullmatch(e.name) and e.is_dir() == dirs]
    return sorted(entries, key=lambda e: e.name)


# --------------------------------------------------------------------------------------------------
# Parsing one report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    """What one report yields. ``sections`` follows :data:`SECTIONED_COLUMNS` (empty when absent);
    ``prompt`` is None when no section of the fallback order has usable text."""

    ref: ReportRef
    status: str
    sections: tuple[str, ...] = ()
    prompt: Prompt | None = None
    custom_rule: bool = False


def process_report(source: ReportSource, ref: ReportRef, params: SectionsParams) -> ReportResult:
    """Read, decode, section and prompt one report; failures become a status, never an exception."""
    try:
        data = source.read(ref)
    except (OSError, zipfile.BadZipFile, KeyError):  # KeyError: member vanished from the zip
        return ReportResult(ref, "unreadable")
    try:
        text = decode_report(data)
    except UnicodeDecodeError:
        return ReportResult(ref, "invalid_utf8")
    if not text.strip():
        return ReportResult(ref, "empty")
    return parse_report(ref, text, params)


def parse_report(ref: ReportRef, text: str, params: SectionsParams) -> ReportResult:
    """Section one decoded report and choose its prompt (custom rules override the fallback)."""
    sections = split_sections(text)
    row = last_sections(sections)
    rule = CUSTOM_RULES.get(ref.study)
    if rule is not None:
        cleaned = clean_prompt_text(apply_custom_rule(text, sections, rule), params.strip_notification)
        prompt = Prompt(cleaned.text, "custom", cleaned.stripped_notification) if cleaned.text else None
    else:
        prompt = choose_prompt(row, params.prompt_fallback, params.strip_notification)
    return ReportResult(ref, "ok", tuple(row[c] for c in SECTIONED_COLUMNS), prompt, rule is not None)


_WORKER: dict[str, object] = {}


def _init_worker(source: ReportSource, params: SectionsParams) -> None:
    _WORKER.update(source=source, params=params)


def _process_in_worker(ref: ReportRef) -> tuple:
    # Plain tuples cross the process boundary about 3x faster than the dataclasses.
    r = process_report(_WORKER["source"], ref, _WORKER["params"])  # type: ignore[arg-type]
    prompt = None if r.prompt is None else (r.prompt.text, r.prompt.source, r.prompt.stripped_notification)
    return r.status, r.sections, prompt, r.custom_rule


def _from_worker(ref: ReportRef, packed: tuple) -> ReportResult:
    status, sections, prompt, custom = packed
    return ReportResult(ref, status, sections, None if prompt is None else Prompt(*prompt), custom)


def process_all(
    source: ReportSource,
    refs: Sequence[ReportRef],
    params: SectionsParams,
    min_per_worker: int = 2000,
) -> list[ReportResult]:
    """Process every report, results in ``refs`` order, in-process or with ``params.workers`` processes.

    Each worker gets at least ``min_per_worker`` reports: below that, starting a pool costs more than
    it saves.
    """
    workers = params.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(refs) // max(1, min_per_worker)))
    bar = dict(total=len(refs), desc="sections", unit="report", mininterval=1.0)
    try:
        if workers == 1:
            return [process_report(source, ref, params) for ref in tqdm(refs, **bar)]
        # spawn, not fork: forking a process that runs other threads (a logging handler, tqdm's
        # monitor, an embedding caller's thread pool) can copy a held lock into the child and hang it.
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(source, params)) as pool:
            packed = pool.imap(_process_in_worker, refs, chunksize=512)
            return [_from_worker(ref, p) for ref, p in zip(refs, tqdm(packed, **bar))]
    finally:
        _close_zips()


# --------------------------------------------------------------------------------------------------
# Tables and summary
# --------------------------------------------------------------------------------------------------


def sectioned_frame(results: Sequence[ReportResult]) -> pd.DataFrame:
    """The official sectioned table: one row per parsed report, columns :data:`CSV_HEADER`."""
    rows = [(r.ref.study, *r.sections) for r in results if r.status == "ok"]
    return pd.DataFrame(rows, columns=list(CSV_HEADER), dtype=object)


def prompts_frame(results: Sequence[ReportResult]) -> pd.DataFrame:
    """One row per study with a prompt: study_id (int, no ``s``), subject_id (int), text, source."""
    rows = [
        (int(r.ref.study[1:]), r.ref.subject_id, r.prompt.text, r.prompt.source)
        for r in results
        if r.prompt is not None
    ]
    frame = pd.DataFrame(rows, columns=list(PROMPT_COLUMNS))
    return frame.astype({"study_id": "int64", "subject_id": "int64", "text": object, "source": object})


def summarize(results: Sequence[ReportResult], duplicates: int) -> dict[str, object]:
    """Counts for summary.json: statuses, sections present, prompts per source, example paths."""
    status = Counter(r.status for r in results)
    ok = [r for r in results if r.status == "ok"]
    with_section = {c: sum(1 for r in ok if r.sections[i]) for i, c in enumerate(SECTIONED_COLUMNS)}
    prompted = [r for r in ok if r.prompt is not None]
    return {
        "files_found": len(results) + duplicates,
        "duplicate_studies_skipped": duplicates,
        "parsed": status["ok"],
        **{s: status[s] for s in STATUSES if s != "ok"},
        "no_usable_section": sum(1 for r in ok if not any(r.sections)),
        "with_section": with_section,
        "prompts": len(prompted),
        "prompt_sources": dict(sorted(Counter(r.prompt.source for r in prompted).items())),
        "no_prompt": len(ok) - len(prompted),
        "notification_stripped": sum(1 for r in prompted if r.prompt.stripped_notification),
        "custom_rules_applied": sum(1 for r in ok if r.custom_rule),
        "examples": {
            s: [r.ref.locator for r in results if r.status == s][:_MAX_EXAMPLES] for s in STATUSES if s != "ok"
        },
    }


def _drop_duplicates(refs: list[ReportRef]) -> tuple[list[ReportRef], int]:
    """Keep the first report of each study id (study ids are unique in MIMIC-CXR; a copy is an error)."""
    seen: set[str] = set()
    kept = []
    for ref in refs:
        if ref.study in seen:
            log.warning("duplicate report for %s skipped: %s", ref.study, ref.locator)
            continue
        seen.add(ref.study)
        kept.append(ref)
    return kept, len(refs) - len(kept)


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("sections", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--reports-root",
        type=Path,
        required=True,
        help="folder with files/pXX/... reports, that files/ folder, or mimic-cxr-reports.zip",
    )
    parser.add_argument("--out", type=Path, required=True, help="sectioned CSV (mimic_cxr_sectioned.csv)")
    parser.add_argument("--prompts", type=Path, default=None, help="prompt CSV (default: prompts.csv beside --out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    params = load_section(args.params, "sections", SectionsParams, args.profile)
    prompts_path = args.prompts or args.out.with_name("prompts.csv")
    summary_path = args.out.with_name("summary.json")
    log.info("params: %s", to_dict(params))

    try:
        source = resolve_source(args.reports_root)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    t0 = time.perf_counter()
    refs, duplicates = _drop_duplicates(list_reports(source))
    t_list = time.perf_counter() - t0
    log.info("found %d reports in %s (%s) in %.1f s", len(refs), source.root, source.kind, t_list)

    t1 = time.perf_counter()
    results = process_all(source, refs, params)
    t_parse = time.perf_counter() - t1
    rate = len(results) / t_parse if t_parse > 0 else float("inf")

    summary = summarize(results, duplicates)
    summary.update(
        source=source.kind,
        reports_root=str(args.reports_root),
        seconds_listing=round(t_list, 3),
        seconds_parsing=round(t_parse, 3),
        reports_per_s=round(rate, 1),
        params=to_dict(params),
    )
    sectioned = sectioned_frame(results)
    prompts = prompts_frame(results)
    write_csv(args.out, sectioned)
    write_csv(prompts_path, prompts)
    write_json(summary_path, summary)

    log.info(
        "parsed %d reports in %.1f s (%.0f reports/s, %d worker(s) asked)", len(results), t_parse, rate, params.workers
    )
    for problem in ("unreadable", "invalid_utf8", "empty"):
        if summary[problem]:
            log.warning("%s: %d file(s) skipped, e.g. %s", problem, summary[problem], summary["examples"][problem][:3])
    log.info("sections present: %s; no usable section: %d", summary["with_section"], summary["no_usable_section"])
    log.info(
        "prompts: %d (%s), none for %d studies, notification text removed from %d",
        summary["prompts"],
        summary["prompt_sources"],
        summary["no_prompt"],
        summary["notification_stripped"],
    )
    log.info("wrote %s (%d rows), %s (%d rows), %s", args.out, len(sectioned), prompts_path, len(prompts), summary_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
