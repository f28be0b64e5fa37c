"""The suite's skip policy: under CI=true a skip is a failure unless the machine itself lacks
something; outside CI it stays a skip that prints why."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

TESTS = '''
import pytest
from tests.conftest import MACHINE_LACKS, skip_or_fail

def test_missing_project_file():
    skip_or_fail("configs/nope.py is missing")

def test_plain_skip():
    pytest.skip("validator not found")

def test_machine_lacks():
    pytest.skip(MACHINE_LACKS + " a GPU")

def test_passes():
    pass
'''


def _run(tmp_path, ci: str):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(TESTS))
    env = dict(os.environ, CI=ci, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_under_ci_every_skip_but_a_machine_lack_fails(tmp_path):
    out = _run(tmp_path, "true")
    assert out.returncode == 1, out.stdout
    assert "2 failed, 1 passed, 1 skipped" in out.stdout, out.stdout
    assert "configs/nope.py is missing" in out.stdout and "validator not found" in out.stdout


def test_outside_ci_skips_stay_skips_and_print_why(tmp_path):
    out = _run(tmp_path, "")
    assert out.returncode == 0, out.stdout
    assert "1 passed, 3 skipped" in out.stdout, out.stdout
    assert "SKIP: configs/nope.py is missing" in out.stdout or "configs/nope.py is missing" in out.stdout
