"""Shared test set-up: offline, untracked unless a test opts in, repo root on the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before any test module imports transformers / huggingface_hub / mlflow.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAYGEN_TRACKING", "off")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@pytest.fixture()
def repo_root() -> Path:
    return REPO


@pytest.fixture()
def tracking_store(tmp_path, monkeypatch) -> str:
    """Switch MLflow tracking on, into a throw-away sqlite store; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("RAYGEN_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture()
def one_thread(monkeypatch):
    """Tiny models run fastest on one thread (and do not thrash when other jobs share the CPU)."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("RAYGEN_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
