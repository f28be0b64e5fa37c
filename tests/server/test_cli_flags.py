"""policy_server's process-level flags: honoured, or refused with a one-line reason."""
from __future__ import annotations

import platform

from policy_server import cli
from tests.conftest import MACHINE_LACKS, skip_or_fail


def test_a_negative_arena_count_is_refused(capsys):
    assert cli.main(["--scripted", "noop", "--malloc-arenas", "-1"]) == 2
    assert "--malloc-arenas must be >= 0, got -1" in capsys.readouterr().err


def test_the_arena_limit_reaches_glibc():
    if platform.libc_ver()[0] != "glibc":
        skip_or_fail(f"{MACHINE_LACKS} glibc (mallopt(M_ARENA_MAX) is glibc's)")
    assert cli.limit_malloc_arenas(2) is True
