"""Validators for tests/deploy: found on PATH or in the venv, else installed once through
scripts/install_deploy_tools.sh (the project's own setup); a test skips, printing why, only when
that install cannot provide the tool."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, skip_or_fail

DEPLOY = REPO / "deploy"
DOCKERFILES = sorted((REPO / "services").glob("*/Dockerfile"))
K8S_MANIFESTS = sorted((DEPLOY / "k8s").rglob("*.yaml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
_install_attempt: dict[str, str] = {}


def _which(name: str) -> str | None:
    venv_bin = Path(sys.executable).parent
    return shutil.which(name, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")


def _install_once() -> str:
    if "log" not in _install_attempt:
        try:
            out = subprocess.run(["bash", str(REPO / "scripts" / "install_deploy_tools.sh")], cwd=REPO,
                                 env={**os.environ, "VENV": str(Path(sys.executable).parent.parent)},
                                 capture_output=True, text=True, timeout=600)
            _install_attempt["log"] = f"exit {out.returncode}: {(out.stderr or out.stdout)[-600:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            _install_attempt["log"] = repr(exc)
    return _install_attempt["log"]


def require_tool(name: str) -> str:
    path = _which(name)
    if path is None:
        log = _install_once()
        path = _which(name)
        if path is None:
            reason = f"{name} unavailable: scripts/install_deploy_tools.sh could not install it ({log})"
            skip_or_fail(reason)
    return path


def run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=kwargs.pop("cwd", REPO), capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="session")
def hadolint() -> str:
    return require_tool("hadolint")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool("prometheus")


@pytest.fixture(scope="session")
def docker_compose() -> str:
    return require_tool("docker-compose")


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    return require_tool("kubernetes-validate")
