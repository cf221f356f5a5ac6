"""Stage ``tables``: the paper's Tables 1-3 regenerated, our numbers beside the paper's.

Command line::

    raygen tables --metrics results/evaluate/metrics.json --out results/tables

Writes ``table1``, ``table2`` and ``table3`` as ``.md`` and ``.csv`` under ``--out``, and
``tables.md`` with all three; what each table holds is in :mod:`raygen.reporting.tables`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.errors import ManifestError
from raygen.io import read_json_object, write_csv, write_text
from raygen.runtime import setup_logging

log = logging.getLogger(__name__)

STAGE = "tables"


@dataclass(frozen=True)
class TablesParams:
    """The ``tables`` section of params.yaml."""

    decimals: int = 3  # digits of our numbers (the paper's are printed as published)
    show_ci: bool = True  # bootstrap intervals beside our AUROC / F1

    def __post_init__(self) -> None:
        if not 1 <= self.decimals <= 6:
            raise ValueError("tables.decimals must be in 1..6")


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.reporting.tables import document, render_tables

    setup_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, TablesParams, args.profile)
    # First: the MLflow helper starts up while the stage works.
    with tracking.start_run(STAGE, profile, params=to_dict(params), params_file=args.params) as tracker:
        metrics = read_json_object(args.metrics)
        if metrics is None:
            raise ManifestError(f"{args.metrics}: missing or not a JSON object; the evaluate stage writes it")
        sections = []
        for name, (frame, text) in render_tables(metrics, params).items():
            write_csv(args.out / f"{name}.csv", frame, index=False)
            write_text(args.out / f"{name}.md", text)
            sections.append(text)
        write_text(args.out / "tables.md", document(sections))
        log.info("wrote Tables 1-3 to %s", args.out)
        tracker.log_artifact(args.out / "tables.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
