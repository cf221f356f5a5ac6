"""Reading a tree (or zip) of MIMIC-CXR reports and sectioning every report: the sections stage's library.

:func:`resolve_source` interprets the reports root (a ``files/`` tree, a zip read member by member, a
folder holding the zip); :func:`list_reports` lists every report in path order; :func:`process_all`
reads, decodes, sections and prompts them (in-process or with a pool of processes), each failure a
status, never an exception; :func:`sectioned_frame`, :func:`prompts_frame` and :func:`summarize` make
the stage's outputs. The text rules themselves are the pure functions of :mod:`raygen.data.reports`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm import tqdm

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

if TYPE_CHECKING:
    from raygen.stages.sections import SectionsParams

log = logging.getLogger(__name__)

PROMPT_COLUMNS = ("study_id", "subject_id", "text", "source")
STATUSES = ("ok", "unreadable", "invalid_utf8", "empty")
_MAX_EXAMPLES = 20  # paths listed per problem in summary.json

_GROUP_RE = re.compile(r"p\d{2}")
_PATIENT_RE = re.compile(r"p(\d+)")
_STUDY_RE = re.compile(r"(s\d+)\.txt")
_MEMBER_RE = re.compile(r"(?:^|/)p\d{2}/p(\d+)/(s\d+)\.txt$")


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
    # Plain tuples cross the process boundary faster than pickled dataclasses.
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
    """Process every report, results in ``refs`` order, in-process or with ``params.workers`` processes
    (0: one per CPU the job was given).

    Each worker gets at least ``min_per_worker`` reports: below that, starting a pool costs more than
    it saves.
    """
    # 0: one per CPU this process may run on (a SLURM job's allocation, not the whole node).
    workers = params.workers or len(os.sched_getaffinity(0))
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


def drop_duplicates(refs: list[ReportRef]) -> tuple[list[ReportRef], int]:
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


def log_summary(summary: dict[str, Any]) -> None:
    """Log the problems skipped, the sections present and the prompts chosen."""
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
