"""Fixtures for the sim client: LIBERO availability, in-process policy servers, a torch-free env."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import HOOKS, REPO, free_port, libero_missing, skip_or_fail

NO_TORCH = Path(__file__).parent / "no_torch"


@pytest.fixture(scope="session")
def libero():
    reason = libero_missing()
    if reason:
        skip_or_fail(reason)
    from sim_client.render import choose_renderer

    try:
        renderer, _ = choose_renderer("egl")
    except RuntimeError:
        renderer, _ = choose_renderer("auto")
    os.environ["MUJOCO_GL"] = renderer
    os.environ["PYOPENGL_PLATFORM"] = renderer
    return renderer


@pytest.fixture(autouse=True)
def replay_positions(monkeypatch):
    """A scripted replay server learns each request's step and episode from the test hook
    (tests/sim/replay.py), in this process and in the workers it spawns."""
    from tests.sim.replay import install

    install()
    monkeypatch.setenv("VLA_TEST_REPLAY", "1")  # tests/hooks/sitecustomize.py: tests/sim/replay.py in every process
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(HOOKS), str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))


def start_policy_server(kind: str = "noop", *, chunk_length: int = 10, grpc_port: int | None = None,
                        http_port: int | None = None, policy=None, **kwargs):
    from policy_server.batcher import BatcherConfig
    from policy_server.scripted import make_scripted
    from policy_server.server import PolicyServer
    from policy_server.service import ServiceConfig

    policy = policy or make_scripted(kind, chunk_length=chunk_length, **kwargs)
    server = PolicyServer(policy, grpc_port=grpc_port or free_port(), http_port=http_port or free_port(),
                          batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=1.0),
                          service=ServiceConfig(token="")).start()
    assert server.wait_ready(30), "policy server did not become ready"
    return server


def server_url(server, transport: str) -> str:
    port = server.grpc_port if transport == "grpc" else server.http_port
    return f"{transport}://127.0.0.1:{port}"


def no_torch_env() -> dict[str, str]:
    env = dict(os.environ)
    env["VLA_TEST_REPLAY"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(NO_TORCH), str(HOOKS), str(REPO)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("POLICY_SERVER_TOKEN", None)
    return env


def sim_client_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sim_client.cli", *args]


DEMO = Path(__file__).parent / "fixtures" / "close_drawer_demo.json"


def demo() -> dict:
    """The scripted demonstration (tests/sim/make_demo.py): libero_90 task 0, trial 0, 50 steps."""
    import json

    return json.loads(DEMO.read_text())


def replay_key(d: dict) -> str:
    return f"{d['suite']}/{d['task_id']}/{d['trial']}"
