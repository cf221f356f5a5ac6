"""The paper path, rehearsed: the `rehearsal` profile end to end on a PhysioNet stand-in and random
stand-ins of the pretrained parts, in a throw-away copy of the pipeline.

    python tests/rehearsal.py prepare DIR                  # render, build the release, copy, stand-ins
    python tests/rehearsal.py run DIR [--runner snakemake|dvc|commands] [--device cuda]

``prepare`` renders a small MIMIC-shaped dataset with most patients in group p10, turns it into the
exact PhysioNet layout (``tests/physionet_server.py``), makes a fresh git + DVC copy of the pipeline
with ``profile: rehearsal`` and writes the four stand-ins into its ``weights/`` folders
(``tests/standins.py``). ``run`` serves the release on the rehearsal's address with basic auth and runs
the pipeline through Snakemake, ``dvc exp run`` or, where neither is installed (a bare GPU image), the
DVC stages' own commands in order. ``--device cuda`` runs every stage on the GPU with bf16, the decoder
compiled and trained through torchrun with one process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physionet_server import FakePhysioNet, build_release  # noqa: E402
from workflow_copy import BIN, expand_foreach, make_copy, set_params, tool  # noqa: E402

USER, PASSWORD = "rehearsal-user", "rehearsal-Pa55word"
PORT = 38917  # params.yaml: profiles.rehearsal.download.mimic.base_url
RENDER = dict(  # small JPGs, 7 in 8 patients in p10 (the paper's group); p11 checks that only p10 is fetched
    studies=200,
    patients=100,
    seed=1,
    groups=("p10",) * 7 + ("p11",),
    height_range=(120, 136),
    width_range=(96, 112),
)


def prepare(root: Path) -> Path:
    """Everything the rehearsal needs under ``root``; returns the pipeline copy (``root/wf``)."""
    from standins import main as write_standins

    from raygen.data.demo.build import build_demo_dataset
    from raygen.data.demo.params import DemoParams

    root.mkdir(parents=True, exist_ok=True)
    build_demo_dataset(root / "render", dataclasses.replace(DemoParams(), **RENDER), workers=2)
    build_release(root / "render", root / "server")
    wf = make_copy(root / "wf", "rehearsal")
    write_standins(["--params", str(wf / "params.yaml"), "--profile", "rehearsal", "--root", str(wf)])
    return wf


@contextlib.contextmanager
def serving(root: Path) -> Iterator[FakePhysioNet]:
    server = FakePhysioNet(root / "server", port=PORT, user=USER, password=PASSWORD)
    try:
        yield server
    finally:
        server.close()


def credentials() -> dict[str, str]:
    return {"PHYSIONET_USERNAME": USER, "PHYSIONET_PASSWORD": PASSWORD}


def on_device(wf: Path, device: str) -> None:
    """Every stage on ``device``; on CUDA also the decoder compiled and launched through torchrun."""

    def edit(params: dict) -> None:
        runtime = params["profiles"]["rehearsal"].setdefault("runtime", {})
        for section in params["runtime"]:
            if "device" in params["runtime"][section]:
                runtime.setdefault(section, {})["device"] = device
        if device == "cuda":
            params["profiles"]["rehearsal"]["train_decoder"]["compile"] = True
            runtime.setdefault("train_decoder", {})["gpus"] = 1

    set_params(wf, edit)


def stage_commands(wf: Path) -> list[str]:
    """The DVC stages' commands in pipeline order, with DVC's ``${...}`` interpolation done the way DVC
    does it: ``${key}`` / ``${item.x}`` of a foreach stage (workflow_copy.expand_foreach), anything else a
    dotted path into params.yaml."""
    stages = yaml.safe_load((wf / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((wf / "params.yaml").read_text())

    def fill(command: str, scope: dict) -> str:
        def lookup(match: re.Match) -> str:
            value = scope
            for part in match.group(1).split("."):
                value = value[part]
            return str(value)

        return re.sub(r"\$\{([\w.]+)\}", lookup, " ".join(command.split()))

    return [fill(stage["cmd"], params) for stage in expand_foreach(stages).values()]


def run_commands(wf: Path, env: dict[str, str]) -> None:
    for command in stage_commands(wf):
        argv = shlex.split(command)
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        for log in re.findall(r"--log (\S+)", command):
            (wf / log).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(argv, cwd=wf, env=env, check=True)


def run(root: Path, runner: str = "snakemake", device: str | None = None, env: dict | None = None) -> float:
    """Run the rehearsal in ``root/wf`` with the release served; returns the wall time in seconds."""
    wf = root / "wf"
    if device:
        on_device(wf, device)
    env = {"RAYGEN_TRACKING": "off", **os.environ, **(env or {}), **credentials()}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    started = time.perf_counter()
    with serving(root):
        if runner == "snakemake":
            tool(wf, "snakemake", "--cores", "2", env=env)
        elif runner == "dvc":
            subprocess.run(["git", "add", "-A"], cwd=wf, check=True, capture_output=True)
            subprocess.run(["git", "commit", "-qm", "rehearsal"], cwd=wf, check=True, capture_output=True)
            tool(wf, "dvc", "exp", "run", "--force", "-S", "profile=rehearsal", env=env)
        else:
            run_commands(wf, env)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="render, build the release, copy the pipeline, write the stand-ins").add_argument(
        "root", type=Path
    )
    runs = sub.add_parser("run", help="serve the release and run the rehearsal")
    runs.add_argument("root", type=Path)
    runs.add_argument("--runner", choices=("snakemake", "dvc", "commands"), default="snakemake")
    runs.add_argument("--device", default=None, help="cpu | cuda (default: each stage's own setting)")
    runs.add_argument("--out", type=Path, default=None, help="write {'wall_s': ...} here")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(prepare(args.root))
        return 0
    wall = run(args.root, args.runner, args.device)
    if args.out:
        args.out.write_text(json.dumps({"wall_s": wall, "runner": args.runner, "device": args.device}) + "\n")
    print(f"rehearsal finished in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
