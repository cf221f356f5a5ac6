"""One process per GPU: when a stage relaunches itself under torchrun, and with which command."""

from __future__ import annotations

import sys

import pytest
import torch

from raygen import runtime


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
    with pytest.raises(RuntimeError, match="only 4 visible"):
        runtime.processes_per_node(8, "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert runtime.processes_per_node(0, "auto") == 1


def test_relaunch_runs_the_same_stage_command_under_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []
    monkeypatch.setattr(runtime.subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    argv = ["--params", "params.yaml", "--out", "results/train_decoder"]
    assert runtime.relaunch_per_gpu("raygen.stages.train_decoder", argv, 0, "auto") == 7
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
