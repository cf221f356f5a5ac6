"""The device check's results as one markdown table, measured values beside the targets.

``python bench/device_summary.py OUT`` reads the JSON files ``bench/device_check.sh`` wrote to OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (file, key, what, target or None); targets are for the paper preset on one H100 / H200.
ROWS = (
    ("decoder.json", "train_samples_per_s", "decoder training, samples/s", 600),
    ("decoder.json", "gen_tokens_images_per_s", "token generation (K=8), images/s", 250),
    ("decoder.json", "gen_with_vq_images_per_s", "generation + VQ decode, images/s", None),
    ("decoder.json", "train_peak_mem_gb", "decoder training peak memory, GB", None),
    ("vqgan.json", "encode_images_per_s", "VQ-GAN encode, images/s", None),
    ("vqgan.json", "decode_images_per_s", "VQ-GAN decode, images/s", None),
    ("rehearsal.json", "wall_s", "rehearsal stages on the device, s", None),
)


def read(out: Path, name: str) -> dict:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else {}


def table(out: Path) -> str:
    decoder = read(out, "decoder.json")
    device = decoder.get("device") or read(out, "vqgan.json").get("device", "unknown")
    paper = decoder.get("preset") == "paper"  # the targets are for the paper preset only
    lines = [f"Device: {device}; decoder preset: {decoder.get('preset', 'n/a')}", ""]
    lines += ["| measurement | value | target | met |", "|---|---:|---:|---|"]
    for name, key, what, target in ROWS:
        value = read(out, name).get(key)
        shown = "not measured" if value is None else f"{value:.1f}"
        met = "" if target is None or value is None or not paper else ("yes" if value >= target else "**no**")
        lines.append(f"| {what} | {shown} | {'' if target is None else f'>= {target}'} | {met} |")
    failed = sorted(
        p.name.removesuffix(".status.json") for p in out.glob("*.status.json") if json.loads(p.read_text())["rc"]
    )
    lines += ["", f"Failed steps: {', '.join(failed)}" if failed else "Every step finished."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
