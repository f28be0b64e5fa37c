"""Shared test helpers: free ports, the repo root, subprocess Python."""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def libero_missing() -> str | None:
    """Why LIBERO cannot run here, or None."""
    if importlib.util.find_spec("libero") is None or importlib.util.find_spec("robosuite") is None:
        return "LIBERO not installed (run `make sim`)"
    try:
        from sim_client.suites import ensure_libero_config

        ensure_libero_config()
    except Exception as exc:  # noqa: BLE001 - any setup failure is a skip reason
        return f"LIBERO unusable: {exc}"
    return None


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def python_exe() -> str:
    return sys.executable


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Two cores here: keep every test's numeric libraries from oversubscribing them.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
