"""policy_server's process-level flags: honoured, or refused with a one-line reason."""
from __future__ import annotations

import platform

from policy_server import cli, malloc
from tests.conftest import MACHINE_LACKS, skip_or_fail


def test_a_negative_arena_count_is_refused(capsys):
    assert cli.main(["--scripted", "noop", "--malloc-arenas", "-1"]) == 2
    assert "--malloc-arenas must be >= 0, got -1" in capsys.readouterr().err


def test_the_arena_limit_reaches_glibc():
    if platform.libc_ver()[0] != "glibc":
        skip_or_fail(f"{MACHINE_LACKS} glibc (mallopt(M_ARENA_MAX) is glibc's)")
    assert malloc.limit_malloc_arenas(2) is True


def test_a_negative_keep_size_is_refused(capsys):
    assert cli.main(["--scripted", "noop", "--malloc-keep-mb", "-1"]) == 2
    assert "--malloc-keep-mb must be >= 0, got -1" in capsys.readouterr().err


def test_requests_reuse_freed_memory_instead_of_page_faulting_it_in():
    """At the default --malloc-keep-mb, a LIBERO-size websocket request reuses the heap memory the
    previous one freed: well under one page fault per request (glibc's own thresholds gave each
    request's buffers back to the OS and faulted them in again, ~120 faults per request here)."""
    if platform.libc_ver()[0] != "glibc":
        skip_or_fail(f"{MACHINE_LACKS} glibc (mallopt is glibc's)")
    import os
    import subprocess
    import sys

    from policy_server.schema import example_observation
    from tests.conftest import REPO, free_port
    from vla.wire import connect

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.Popen([sys.executable, "-m", "policy_server.cli", "--scripted", "noop", "--grpc-port", "-1",
                             "--http-port", str(port), "--log-level", "WARNING"], cwd=REPO, env=env)
    try:
        with connect(f"ws://127.0.0.1:{port}", token="", retries=0, timeout_s=30) as c:
            c.wait_ready(timeout_s=60, poll_s=0.1)
            obs = example_observation(256, 256)
            for _ in range(20):
                c.infer(obs)

            def faults() -> int:   # minflt, field 10 of /proc/PID/stat
                with open(f"/proc/{proc.pid}/stat") as f:
                    return int(f.read().rsplit(")", 1)[1].split()[7])

            before = faults()
            for _ in range(100):
                c.infer(obs)
            per_request = (faults() - before) / 100
        assert per_request < 5, f"{per_request:.1f} page faults per request"
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_negative_torch_thread_count_is_refused(capsys):
    assert cli.main(["--scripted", "noop", "--torch-threads", "-1"]) == 2
    assert "--torch-threads must be >= 0, got -1" in capsys.readouterr().err


def test_the_model_gets_the_torch_threads_asked_for(monkeypatch, tmp_path):
    """--torch-threads N is set before the model loads; by default 1, unless OMP_NUM_THREADS says
    otherwise; 0 leaves torch's own default (one per core)."""
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    missing = str(tmp_path / "no_such_work_dir")   # the load then fails, after the threads are set
    for argv, omp, expected in ((["--torch-threads", "3"], None, [3]), ([], None, [1]), ([], "4", []),
                                (["--torch-threads", "2"], "4", [2]), (["--torch-threads", "0"], None, [])):
        calls.clear()
        if omp is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", omp)
        assert cli.main(["--work-dir", missing, *argv]) == 2
        assert calls == expected, (argv, omp)
