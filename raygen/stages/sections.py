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
import time
from dataclasses import dataclass, field
from pathlib import Path

from raygen.cli import stage_parser
from raygen.config import ConfigError, load_section, to_dict
from raygen.data.reports import SECTIONED_COLUMNS
from raygen.io import write_csv, write_json
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

STAGE = "sections"


@dataclass(frozen=True)
class SectionsParams:
    """The ``sections`` section of params.yaml."""

    # Sections tried in order for the prompt text. The paper prompts with the impression only and drops
    # studies without one (docs/mimic-cxr.md section 5); the official order is impression, findings,
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
# The stage
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
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
    from raygen.data.sections import (
        drop_duplicates,
        list_reports,
        log_summary,
        process_all,
        prompts_frame,
        resolve_source,
        sectioned_frame,
        summarize,
    )

    setup_logging(args.log)
    params = load_section(args.params, STAGE, SectionsParams, args.profile)
    prompts_path = args.prompts or args.out.with_name("prompts.csv")
    summary_path = args.out.with_name("summary.json")
    log.info("params: %s", to_dict(params))

    try:
        source = resolve_source(args.reports_root)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    t0 = time.perf_counter()
    refs, duplicates = drop_duplicates(list_reports(source))
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
    log_summary(summary)
    log.info("wrote %s (%d rows), %s (%d rows), %s", args.out, len(sectioned), prompts_path, len(prompts), summary_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
