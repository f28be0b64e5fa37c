"""vla.io: atomic writes leave the old file or the new one; reads name file and line."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vla import io


def test_atomic_write_text_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    assert io.atomic_write_text(target, "héllo\n") == len("héllo\n".encode())
    io.atomic_write_text(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_writes_leave_the_mode_open_would_give(tmp_path):
    # Not mkstemp's 0600: a dataset's meta/ written on the host must be readable by the containers'
    # uid (make images-test copies it into the trainer's volume as uid 10001).
    umask = os.umask(0)
    os.umask(umask)
    io.atomic_write_text(tmp_path / "meta" / "info.json", "{}")
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    for f in (tmp_path / "meta" / "info.json", tmp_path / "b.bin"):
        assert stat.S_IMODE(f.stat().st_mode) == io.FILE_MODE == 0o666 & ~umask != 0o600


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "c.json"
    io.write_json(target, {"a": 1})

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write('{"a": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.atomic_write(target, half_then_crash)
    assert io.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_read_json_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(io.JSONFileError, match=r"bad\.json:3: invalid JSON"):
        io.read_json(bad)
    with pytest.raises(KeyError, match=r"missing\.json: file not found"):
        io.read_json(tmp_path / "missing.json", error=KeyError)


def test_jsonl_round_trip_and_errors(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"i": 0}, {"i": 1, "s": "x"}]
    io.write_jsonl(path, rows)
    assert io.read_jsonl(path) == rows

    path.write_text('{"i": 0}\n\n[1, 2]\n')
    with pytest.raises(io.JSONFileError, match=r"rows\.jsonl:3: expected a JSON object, got list"):
        io.read_jsonl(path)
    path.write_text('{"i": 0}\n{"i": \n{"i": 2}\n')
    with pytest.raises(io.JSONFileError, match=r"rows\.jsonl:2: invalid JSON line"):
        io.read_jsonl(path, torn_tail_ok=True)   # a bad line in the middle is never a torn tail


def test_jsonl_torn_tail(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"i": 0}\n{"i": 1}\n{"i": ')
    assert io.read_jsonl(path, torn_tail_ok=True) == [{"i": 0}, {"i": 1}]
    with pytest.raises(io.JSONFileError, match=r"log\.jsonl:3: invalid JSON line"):
        io.read_jsonl(path)


def test_io_is_stdlib_only():
    code = ("import sys; import vla.io;"
            "bad = [m for m in ('torch', 'numpy', 'yaml') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
