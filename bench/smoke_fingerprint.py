"""Run the smoke pipeline in a throw-away copy and fingerprint its key outputs.

Shows that a refactoring leaves behaviour unchanged: run it before and after and diff the two JSON
files. Two runs of the same code differ in timings (``seconds``, ``images_per_s``, ``wall_s``) and
therefore in the checkpoint files' own SHA-256 (which the checkpoints of later stages record), so
those are masked; every tensor, token id, image, prediction and metric is compared exactly.

    python bench/smoke_fingerprint.py OUT.json [--keep DIR]   # run, then fingerprint
    python bench/smoke_fingerprint.py OUT.json --rehash DIR   # fingerprint an existing run folder
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_copy import BIN, make_copy, tool  # noqa: E402

KEY_OUTPUTS = (  # globs under the copy; each file found is fingerprinted
    "data/smoke/*.json",
    "data/smoke/*.csv",
    "results/sections/*.csv",
    "results/cohort/*.csv",
    "results/vqgan/model.ckpt",
    "results/vqgan/metrics.json",
    "results/tokenize/*",
    "results/embed_text/*.npy",
    "results/train_decoder/model.ckpt",
    "results/synthesize/**/*.png",
    "results/synthesize/*.csv",
    "results/train_classifier/**/*.csv",
    "results/train_classifier/**/model.ckpt",
    "results/evaluate/*.json",
    "results/tables/*.md",
    "results/tables/*.csv",
)
VOLATILE_KEYS = {
    "seconds",
    "total_seconds",
    "render_seconds",
    "images_per_s",
    "train_images_per_s",
    "studies_per_second",
    "wall_s",
    "checkpoint_sha256",
    "sha256",
}
SHORT_HASH = re.compile(r"\b[0-9a-f]{12}\b")


def normalise(value):
    """A JSON-able, timing-free view of a loaded JSON / checkpoint tree; tensors become their digest."""
    import numpy as np
    import torch

    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items() if str(k) not in VOLATILE_KEYS}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if torch.is_tensor(value):
        return hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    if isinstance(value, np.ndarray):
        return hashlib.sha256(value.tobytes()).hexdigest()
    if isinstance(value, str):
        return SHORT_HASH.sub("<hash>", value)
    return value if isinstance(value, int | float | bool | type(None)) else repr(value)


def fingerprint(path: Path) -> str:
    if path.suffix == ".ckpt":
        import torch

        content = normalise(torch.load(path, map_location="cpu", weights_only=False))
    elif path.suffix == ".json":
        content = normalise(json.loads(path.read_text()))
    elif path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        content = [{k: v for k, v in row.items() if k not in VOLATILE_KEYS} for row in rows]
    elif path.suffix == ".md":
        content = SHORT_HASH.sub("<hash>", path.read_text())
    else:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_run(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): fingerprint(path)
        for pattern in KEY_OUTPUTS
        for path in sorted(root.glob(pattern))
        if path.is_file()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="JSON file: output path -> fingerprint")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder (must not exist)")
    parser.add_argument("--rehash", type=Path, default=None, help="fingerprint this finished run folder instead")
    args = parser.parse_args()
    root = args.rehash
    if root is None:
        root = make_copy(args.keep or Path(tempfile.mkdtemp(prefix="raygen-fp-")) / "wf", "smoke")
        path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
        tool(root, "snakemake", "--cores", "2", env={"RAYGEN_TRACKING": "off", "PATH": path})
    hashes = fingerprint_run(root)
    args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} files fingerprinted -> {args.out} (run in {root})")


if __name__ == "__main__":
    main()
