"""Run the smoke pipeline in a throw-away copy and print the SHA-256 of its key outputs.

Used to show that a refactoring leaves behaviour unchanged: run it before and after and diff the two
JSON files. ``python bench/smoke_fingerprint.py OUT.json [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_copy import BIN, make_copy, tool  # noqa: E402

KEY_OUTPUTS = (  # globs under the copy; each file found is hashed
    "data/smoke/**/tokens*",
    "results/tokenize/**/*",
    "results/embed_text/**/*.npy",
    "results/train_decoder/**/*.ckpt",
    "results/synthesize/**/*.png",
    "results/train_classifier/**/*.csv",
    "results/evaluate/**/*.json",
    "results/tables/**/*.md",
    "results/tables/**/*.csv",
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder (must not exist)")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="raygen-fp-")) / "wf"
    root = make_copy(base, "smoke")
    env = {
        "RAYGEN_TRACKING": "off",
        "RAYGEN_PIPELINE_RUN": "fingerprint",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    tool(root, "snakemake", "--cores", "2", env=env)
    hashes = {}
    for pattern in KEY_OUTPUTS:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                hashes[str(path.relative_to(root))] = digest(path)
    args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} files hashed -> {args.out} (run in {root})")


if __name__ == "__main__":
    main()
