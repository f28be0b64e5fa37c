"""README.md stays honest: every make target, path, CLI flag, config type, metric and benchmark it
names exists, the commands it shows parse with the real parsers, and its Python client example
runs against a real `policy_server --scripted noop` over gRPC, websocket and HTTP.

Fast (no model, no simulator): about 15 s here.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, stop_process

README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README) if kind == lang]


def section(title: str) -> str:
    """The text under a `## title` heading, up to the next `## ` heading."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def code_text() -> str:
    """Everything the README shows as code: fenced blocks and `inline` spans."""
    return "\n".join([body for _, body in FENCE.findall(README)] + re.findall(r"`([^`\n]+)`", README))


# -- commands in bash blocks ---------------------------------------------------------------

SEPARATORS = {"&&", "||", ";", "|", "&"}


def commands() -> list[list[str]]:
    """Each simple command of every bash block, as argv (continuations joined, comments and env
    assignments dropped, split at && ; | &)."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            argv: list[str] = []
            for tok in shlex.split(line, comments=True) + [";"]:
                if tok in SEPARATORS:
                    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
                        argv.pop(0)
                    if argv:
                        out.append(argv)
                    argv = []
                else:
                    argv.append(tok)
    return out


def cli_of(argv: list[str]) -> tuple[str, list[str]] | None:
    """(cli name, its arguments) for the project's CLIs; None for other commands."""
    head = Path(argv[0]).name
    if head in ("vla-train", "policy_server"):
        return head, argv[1:]
    if head == "sim_client":
        if argv[1:2] in (["merge"], ["report"], ["record"]):
            return f"sim_client {argv[1]}", argv[2:]
        return "sim_client", argv[1:]
    if head == "bash" and len(argv) > 1 and argv[1] in ("scripts/train.sh", "scripts/eval.sh"):
        return argv[1], argv[2:]
    if head.startswith("python") and len(argv) > 1 and argv[1] == "scripts/download_libero.py":
        return argv[1], argv[2:]
    return None


HELP_CMDS = {
    "vla-train": ["-m", "trainer.cli"],
    "policy_server": ["-m", "policy_server.cli"],
    "sim_client": ["-m", "sim_client.cli"],
    "sim_client merge": ["-m", "sim_client.cli", "merge"],
    "sim_client report": ["-m", "sim_client.cli", "report"],
    "sim_client record": ["-m", "sim_client.cli", "record"],
    "scripts/download_libero.py": [str(REPO / "scripts/download_libero.py")],
}
# train.sh hands its extra arguments to vla-train; eval.sh hands them to sim_client.
HELP_CMDS["scripts/train.sh"] = HELP_CMDS["vla-train"]
HELP_CMDS["scripts/eval.sh"] = HELP_CMDS["sim_client"]


@pytest.fixture(scope="module")
def help_flags() -> dict[str, set[str]]:
    flags = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name, args in HELP_CMDS.items():
        proc = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"{name} --help failed: {proc.stderr[-2000:]}"
        flags[name] = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", proc.stdout)) - {"--help"}
        assert proc.stdout.startswith("usage:"), f"{name} --help printed no usage"
    return flags


def test_readme_shows_every_cli():
    shown = {c[0] for c in map(cli_of, commands()) if c}
    assert shown >= set(HELP_CMDS), f"README bash blocks never run {sorted(set(HELP_CMDS) - shown)}"


def test_every_flag_shown_is_accepted_by_its_cli(help_flags):
    bad = []
    for argv in commands():
        found = cli_of(argv)
        if not found:
            continue
        name, args = found
        for tok in args:
            flag = tok.strip("[]").split("=")[0]
            if flag.startswith("--") and flag not in help_flags[name]:
                bad.append(f"{name}: {flag}  (in: {' '.join(argv)})")
    assert not bad, "flags the CLIs do not accept:\n" + "\n".join(bad)


def test_commands_parse_with_the_real_parsers():
    """Beyond single flags: each shown command line parses whole, and --cfg-options apply."""
    from policy_server.cli import build_parser as server_parser
    from sim_client.cli import build_parser as sim_parser
    from sim_client.record import build_parser as record_parser
    from trainer.cli import parse_args as train_args
    from vla.config import Config

    checked = 0
    for argv in commands():
        found = cli_of(argv)
        if not found:
            continue
        name, args = found
        try:
            if name in ("vla-train", "scripts/train.sh"):
                ns = train_args(args)
                assert (REPO / ns.config).is_file(), f"config {ns.config} does not exist"
                import trainer.runners  # noqa: F401 - registers the runner types, as vla-train does

                Config.fromfile(REPO / ns.config, ns.cfg_options)  # every override names a real key
            elif name == "scripts/eval.sh":
                config, _checkpoint, *rest = args
                assert (REPO / config).is_file(), f"config {config} does not exist"
                sim_parser().parse_args(["--server", "grpc://h:1", "--out", "o", *rest])
            elif name == "policy_server":
                server_parser().parse_args(args)
            elif name == "sim_client":
                sim_parser().parse_args(args)
            elif name == "sim_client record":
                record_parser().parse_args(args)
            else:
                continue
        except SystemExit as exc:
            pytest.fail(f"{name} rejects the README's command ({exc}): {' '.join(argv)}")
        checked += 1
    assert checked >= 15, f"only {checked} commands checked; did the bash blocks change shape?"


def test_download_commands_cover_the_four_suites():
    shown = {args[args.index("--repo-id") + 1] for name, args in filter(None, map(cli_of, commands()))
             if name == "scripts/download_libero.py"}
    want = {f"Aiming1998/libero_{s}_no_noops_lerobotv2.1" for s in ("10", "spatial", "object", "goal")}
    assert shown == want


def test_demo_section_names_real_knobs():
    """The make-demo section's flags and DEMO_CONFIG values are the demo's own."""
    from demo.cli import CONFIGS

    start = README.index("<!-- BEGIN make-demo-output")
    text = README[start:README.index("<!-- END make-demo-output -->")]
    flags = set(re.findall(r"`(--[a-z][a-z-]*)`", text))
    assert flags, "the make-demo section names no flags"
    accepted = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", _demo_help()))
    assert flags <= accepted, f"python -m demo does not accept {sorted(flags - accepted)}"
    for family in re.findall(r"DEMO_CONFIG=(\w+)", text):
        assert family in CONFIGS, f"DEMO_CONFIG={family} is not a demo config ({sorted(CONFIGS)})"
        assert (REPO / CONFIGS[family]).is_file()


def _demo_help() -> str:
    proc = subprocess.run([sys.executable, "-m", "demo", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


# -- names -----------------------------------------------------------------------------------

def test_make_targets_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    named = set(re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code_text()))
    assert named, "README names no make target"
    assert named <= targets, f"make targets not in the Makefile: {sorted(named - targets)}"


TOP_DIRS = ("scripts", "configs", "deploy", "services", "benchmarks", "trainer", "policy_server", "sim_client",
            "vla", "proto", "tests")


def test_paths_exist():
    pattern = re.compile(rf"(?<![\w/.-])((?:{'|'.join(TOP_DIRS)})/[\w./-]*)")
    paths = {m.rstrip(".,:") for m in pattern.findall(README)}
    assert len(paths) > 20
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"paths named in README.md that do not exist: {missing}"


def test_debian_packages_match_install_sim():
    script = (REPO / "scripts/install_sim.sh").read_text()
    pkgs = re.search(r"^APT_PKGS=\(([^)]*)\)", script, re.M).group(1).split()
    line = next(l for l in README.splitlines() if "the simulator" in l and "Debian" in l)
    assert all(f" {p} " in f" {line.replace('`', ' ')} " for p in pkgs), (pkgs, line)


def test_metric_names_match_the_server():
    source = (REPO / "policy_server/metrics.py").read_text()
    server = set(re.findall(r"\"(policy_[a-z_]+)\"", source))
    start = README.index("**Metrics**")
    shown = set(re.findall(r"`(policy_[a-z_]+)", README[start:README.index("deploy/prometheus/", start)]))
    assert server and shown == server, (sorted(shown), sorted(server))


def test_benchmark_result_names_exist():
    rows = [r for r in section("Benchmarks").splitlines() if r.startswith("| `")]
    assert len(rows) == len(list((REPO / "benchmarks").glob("[!_]*.py"))), "one row per benchmark script"
    for row in rows:
        script, names = row.split("|")[1:3]
        source = (REPO / "benchmarks" / script.strip(" `")).read_text()
        for name in re.findall(r"`(\w+)`", names):
            assert name in source, f"benchmarks/{script.strip(' `')} prints no RESULT {name}"


# -- config reference ------------------------------------------------------------------------

def _registered() -> set[str]:
    # A fresh interpreter: other tests in this session register their own test types.
    code = ("from vla.config import registered_names\n"
            "from vla.config.registry import _import_providers\n"
            "_import_providers()\n"  # vla.data (training and eval transforms), vla.models
            "import trainer.runners\n"  # runners and VLAMetric
            "print('\\n'.join(registered_names()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def _reference_tables() -> tuple[set[str], set[str]]:
    """(types in the main table, types in the 'read as data' table) of the config reference."""
    text = section("Config reference")
    main, _, data = text.partition("read as data")
    assert data, "config reference lost its 'read as data' table"

    def names(part: str) -> set[str]:
        return {n for row in part.splitlines() if row.startswith("| `")
                for n in re.findall(r"`(\w+)`", row.split("|")[1])}

    return names(main), names(data)


def test_config_reference_is_the_registry():
    documented, data_only = _reference_tables()
    registered = _registered()
    assert documented - registered == set(), f"documented but not registered: {sorted(documented - registered)}"
    assert registered - documented == set(), f"registered but not documented: {sorted(registered - documented)}"
    assert not data_only & registered, f"listed as data-only but registered: {sorted(data_only & registered)}"


def test_every_type_in_the_configs_is_documented():
    documented, data_only = _reference_tables()
    used = set()
    for cfg in (REPO / "configs").rglob("*.py"):
        used |= set(re.findall(r"\btype\s*=\s*['\"](\w+)['\"]", cfg.read_text()))
    assert used, "no type= found in configs/"
    assert used <= documented | data_only, f"config types missing from the reference: {sorted(used - documented - data_only)}"
    assert data_only <= used, f"data-only types no config uses: {sorted(data_only - used)}"


# -- the client example against a real server -------------------------------------------------

def _client_example() -> str:
    found = [b for b in blocks("python") if "from vla.wire import connect" in b]
    assert len(found) == 1, "README should have exactly one vla.wire client example"
    example = found[0]
    assert len(example.strip().splitlines()) <= 14, "the client example should stay about 10 lines"
    return example


def _scripted_server_argv(grpc_port: int, http_port: int) -> list[str]:
    """The README's own `policy_server --scripted noop ...` line, on free ports."""
    for argv in commands():
        if Path(argv[0]).name == "policy_server" and "--scripted" in argv:
            args = argv[1:]
            for flag, port in (("--grpc-port", grpc_port), ("--http-port", http_port)):
                assert flag in args, f"the README's scripted server line lacks {flag}"
                args[args.index(flag) + 1] = str(port)
            return args
    raise AssertionError("README shows no `policy_server --scripted ...` command")


@pytest.fixture(scope="module")
def scripted_server():
    grpc_port, http_port = free_port(), free_port()
    exe = Path(sys.executable).with_name("policy_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "policy_server.cli"]
    env = {k: v for k, v in os.environ.items() if k != "POLICY_SERVER_TOKEN"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd + _scripted_server_argv(grpc_port, http_port), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, f"policy_server exited: {proc.stderr.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "policy_server not ready after 45 s"
            time.sleep(0.2)
        yield {"grpc": f"grpc://127.0.0.1:{grpc_port}", "ws": f"ws://127.0.0.1:{http_port}",
               "http": f"http://127.0.0.1:{http_port}"}
    finally:
        stop_process(proc, timeout=30)


@pytest.mark.parametrize("transport", ["grpc", "ws", "http"])
def test_client_example_runs(scripted_server, transport):
    import numpy as np

    example = _client_example()
    shown = {"grpc": "grpc://127.0.0.1:50051", "ws": "ws://127.0.0.1:8000", "http": "http://127.0.0.1:8000"}
    for url in shown.values():
        assert url in example, f"the client example no longer mentions {url}"
    code = example.replace(shown["grpc"], scripted_server[transport], 1)
    assert scripted_server[transport] in code
    ns: dict = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (client example)", "exec"), ns)  # noqa: S102 - our own README
    actions = ns["reply"]["actions"]
    info = ns["info"]
    # noop: chunk 10 (the CLI default) of [0]*6 + [-1], float32, and ServerInfo agrees.
    assert actions.shape == (10, 7) == (info.chunk_length, info.action_dim)
    assert actions.dtype == np.float32
    np.testing.assert_array_equal(actions, np.tile(np.array([0] * 6 + [-1], np.float32), (10, 1)))
    assert out.getvalue().strip() == "(10, 7)"
