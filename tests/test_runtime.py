"""One process per GPU: when a stage relaunches itself under torchrun, and with which command."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from raygen import runtime
from raygen.errors import UsageError


def test_cpu_and_torchrun_children_never_relaunch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert runtime.processes_per_node(0, "cpu") == 1
    monkeypatch.setenv("WORLD_SIZE", "4")  # already one of torchrun's processes
    assert runtime.processes_per_node(0, "auto") == 1
    assert runtime.relaunch_per_gpu("raygen.stages.train_decoder", [], 0, "auto") is None


def test_every_visible_gpu_or_the_number_asked_for(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert runtime.processes_per_node(0, "auto") == 4
    assert runtime.processes_per_node(2, "auto") == 2
    with pytest.raises(UsageError, match="8 GPUs asked for but 4 visible"):
        runtime.processes_per_node(8, "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert runtime.processes_per_node(0, "auto") == 1
    assert runtime.processes_per_node(4, "auto") == 1, "no GPU: one CPU process, not four sharing the cores"


def test_relaunch_runs_the_same_stage_command_under_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "10")  # the job's cores, as Snakemake sets it
    calls, envs = [], []
    monkeypatch.setattr(runtime.subprocess, "call", lambda cmd, env: calls.append(cmd) or envs.append(env) or 7)
    argv = ["--params", "params.yaml", "--out", "results/train_decoder"]
    assert runtime.relaunch_per_gpu("raygen.stages.train_decoder", argv, 0, "auto") == 7
    assert envs[0]["OMP_NUM_THREADS"] == "5", "each of the 2 ranks gets its share of the job's threads"
    assert calls == [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "raygen.stages.train_decoder",
            *argv,
        ]
    ]


# ---------------------------------------------------------------------------------------------
# device: auto on a machine with an NVIDIA GPU that torch cannot use
# ---------------------------------------------------------------------------------------------

PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OPEN_MODULE = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
    "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 07:09:43 UTC 2025\nGCC version:  gcc version 12.2.0 (GCC)\n"
)


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine without a usable CUDA device whose NVIDIA driver (if any) the test chooses."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for var in ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_STEP_GPUS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(runtime, "NVIDIA_DRIVER_FILE", tmp_path / "version")  # absent until written
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)

    def driver(text: str) -> None:
        (tmp_path / "version").write_text(text)

    return driver


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "raygen.runtime" and r.levelname == "WARNING"]


def test_auto_on_a_driver_too_old_for_the_cuda_build_warns_and_names_both(machine, caplog):
    machine(PROPRIETARY)
    with caplog.at_level("INFO", logger="raygen.runtime"):
        assert runtime.pick_device("auto") == torch.device("cpu")
    [warning] = warnings_of(caplog)
    assert "driver 535.129.03 is too old" in warning and "CUDA 13.0" in warning and ">= 580" in warning
    assert "device: cpu" in warning and "README" in warning
    assert any(r.getMessage().startswith("device: cpu (asked for 'auto'") for r in caplog.records)


def test_auto_with_a_recent_driver_but_no_gpu_seen_still_warns(machine, caplog):
    machine(OPEN_MODULE)
    assert runtime.nvidia_driver_version() == "580.65.06"
    runtime.pick_device("auto")
    [warning] = warnings_of(caplog)
    assert "(580.65.06)" in warning and "sees no usable GPU" in warning and "too old" not in warning


def test_the_driver_version_comes_from_nvidia_smi_without_the_proc_file(machine, monkeypatch, caplog):
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="470.82.01\n", stderr="")

    monkeypatch.setattr(runtime.subprocess, "run", run)
    runtime.pick_device("auto")
    assert calls and calls[0][0] == "/usr/bin/nvidia-smi"
    [warning] = warnings_of(caplog)
    assert "driver 470.82.01 is too old" in warning


def test_nvidia_smi_without_a_loaded_driver_means_no_driver(machine, monkeypatch, caplog):
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    monkeypatch.setattr(runtime.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, failed, ""))
    assert runtime.nvidia_driver_version() is None
    runtime.pick_device("auto")
    assert warnings_of(caplog) == []


def test_a_slurm_job_given_no_gpu_on_a_gpu_node_is_not_warned(machine, monkeypatch, caplog):
    machine(PROPRIETARY)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    runtime.pick_device("auto")
    assert warnings_of(caplog) == [], "it asked for no GPU and got none"
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    runtime.pick_device("auto")
    assert len(warnings_of(caplog)) == 1, "a job given a GPU that torch cannot use is warned"


def test_no_warning_without_an_nvidia_driver_or_with_gpus_hidden_on_purpose(machine, monkeypatch, caplog):
    assert runtime.nvidia_driver_version() is None
    assert runtime.pick_device("auto") == torch.device("cpu")
    machine(PROPRIETARY)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runtime.pick_device("auto") == torch.device("cpu")
    assert warnings_of(caplog) == []


def test_a_cpu_only_torch_build_is_named_as_the_cause(machine, monkeypatch, caplog):
    machine(OPEN_MODULE)
    monkeypatch.setattr(torch.version, "cuda", None)
    runtime.pick_device("auto")
    [warning] = warnings_of(caplog)
    assert "CPU-only build" in warning


def test_an_explicit_cuda_device_that_is_unusable_is_an_error_with_the_cause(machine):
    machine(PROPRIETARY)
    with pytest.raises(RuntimeError, match="535.129.03 is too old"):
        runtime.pick_device("cuda")


def test_auto_with_a_usable_gpu_picks_it_without_probing_the_driver(machine, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime, "nvidia_driver_version", lambda: pytest.fail("no probe when CUDA works"))
    assert runtime.pick_device("auto") == torch.device("cuda")
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    ("device", "cpu_threads", "env", "expected"),
    [
        ("cpu", 1, "", 1),  # the stage's runtime setting, whoever launched it
        ("cpu", 1, "2", 1),  # ... even where the launcher asked for another count
        ("cpu", 0, "1", 1),  # 0: the launcher's (RAYGEN_THREADS here)
        ("cuda", 1, "", None),  # a GPU stage's CPU threads stay the launcher's
    ],
)
def test_a_stage_on_the_cpu_computes_with_its_own_thread_count(monkeypatch, device, cpu_threads, env, expected):
    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    monkeypatch.setenv("RAYGEN_THREADS", env)
    calls: list[int] = []
    runtime.configure_torch(torch.device(device), cpu_threads)
    assert calls == ([] if expected is None else [expected])
    assert torch.get_num_threads() == before
