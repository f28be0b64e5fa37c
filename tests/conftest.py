"""Shared test helpers: free ports, the repo root, subprocess Python."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOOKS = REPO / "tests" / "hooks"  # sitecustomize with the VLA_TEST_* fault hooks for subprocesses


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited after `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A skip whose reason starts with this names something the machine itself lacks (a GPU, a mount
# it may not make). Every other skip under CI=true is a failure: CI installs everything the
# project needs (`make test`), so a missing project file, validator or simulator is a broken setup.
MACHINE_LACKS = "machine lacks:"


def skip_or_fail(reason: str) -> None:
    """Skip with `reason` printed; under CI=true, fail instead (CI must not hide a broken setup)."""
    print(f"SKIP: {reason}")
    if IN_CI and not reason.startswith(MACHINE_LACKS):
        pytest.fail(f"CI=true and a test would skip: {reason}", pytrace=False)
    pytest.skip(reason)


def libero_missing() -> str | None:
    """Why LIBERO is not installed, or None. A LIBERO that is installed but fails to set up is an
    error (raised here), never a skip: it is the project's own setup that broke."""
    if importlib.util.find_spec("libero") is None or importlib.util.find_spec("robosuite") is None:
        return "LIBERO not installed (run `make sim`)"
    from sim_client.suites import ensure_libero_config

    ensure_libero_config()
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip from anywhere (importorskip, a fixture, a mark) fails the test unless its
    reason says the machine lacks something: the policy holds for tests that do not call
    skip_or_fail themselves."""
    outcome = yield
    report = outcome.get_result()
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(MACHINE_LACKS):
        report.outcome = "failed"
        report.longrepr = f"CI=true and the test was skipped: {reason}"


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
