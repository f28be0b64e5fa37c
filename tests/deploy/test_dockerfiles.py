"""services/*/Dockerfile: hadolint clean, and the properties the issue asks for, read from the files."""
from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import REPO
from tests.deploy.conftest import DOCKERFILES, run
from tests.deploy.dockerfile_parse import exec_form, parse
from vla.wire import protocol

SERVICES = {p.parent.name: p for p in DOCKERFILES}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_three_images_exist():
    assert set(SERVICES) == {"trainer", "policy_server", "sim_client"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(hadolint, dockerfile):
    out = run([hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)])
    assert out.returncode == 0 and not out.stdout.strip(), f"hadolint {dockerfile}:\n{out.stdout}{out.stderr}"


def test_hadolint_catches_a_bad_dockerfile(hadolint, tmp_path):
    # Control: the linter really lints (an unpinned base and root user must be reported).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    out = run([hadolint, "--no-color", str(bad)])
    assert out.returncode != 0 and "DL3007" in out.stdout


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_multi_stage_with_pinned_bases(name):
    stages = parse(SERVICES[name])
    assert len(stages) >= 2, f"{name}: expected a builder and a runtime stage"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and "$" not in stage.base, f"{name}: base {stage.base!r} is not resolved to a tagged image"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: base {stage.base!r} is not pinned to a version"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_runtime_stage_runs_as_a_numeric_non_root_user(name):
    final = parse(SERVICES[name])[-1]
    users = final.all("USER")
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]!r} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # Nothing after USER may need root.
    after_user = final.instructions[[i for i, (ins, _) in enumerate(final.instructions) if ins == "USER"][-1]:]
    assert not [a for ins, a in after_user if ins == "RUN"], f"{name}: RUN after USER"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_install_before_sources_are_copied(name):
    builder = parse(SERVICES[name])[0]
    steps = builder.instructions
    dep_install = next(i for i, (ins, a) in enumerate(steps) if ins == "RUN" and re.search(r'/src\[\w+\]', a))
    first_source = next(i for i, (ins, a) in enumerate(steps) if ins == "COPY" and a.split()[0] == "vla")
    assert dep_install < first_source, f"{name}: sources are copied before dependencies install (no layer cache)"
    copied_before = [a.split()[:-1] for ins, a in steps[:dep_install] if ins == "COPY"]
    assert all(set(src) <= {"pyproject.toml", "README.md", "scripts/install_sim.sh", "services/wheels/"} for src in copied_before)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_copy_sources_exist_and_are_not_dockerignored(name):
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith(("#", "!"))}
    for stage in parse(SERVICES[name]):
        for args in stage.all("COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in args.split()):
                continue
            for src in words[:-1]:
                assert (REPO / src).exists(), f"{name}: COPY {src} does not exist in the build context"
                assert src.split("/")[0] not in ignored, f"{name}: COPY {src} is excluded by .dockerignore"


def test_server_image_has_a_readiness_healthcheck_and_the_protocol_ports():
    final = parse(SERVICES["policy_server"])[-1]
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1
    cmd = checks[0][checks[0].index("CMD"):]
    assert f"127.0.0.1:{protocol.HTTP_PORT}{protocol.READY_PATH}" in cmd
    exposed = {int(p) for args in final.all("EXPOSE") for p in args.split()}
    assert exposed == {protocol.GRPC_PORT, protocol.HTTP_PORT}
    entry = exec_form(final.all("ENTRYPOINT")[-1])
    cmd_args = exec_form(final.all("CMD")[-1])
    assert entry == ["policy_server"] and "policy_server" in PYPROJECT["project"]["scripts"]
    # Inside a container the server must listen on all interfaces, on the protocol ports.
    assert cmd_args[cmd_args.index("--host") + 1] == "0.0.0.0"
    assert cmd_args[cmd_args.index("--grpc-port") + 1] == str(protocol.GRPC_PORT)
    assert cmd_args[cmd_args.index("--http-port") + 1] == str(protocol.HTTP_PORT)


def _extra_requirements(extra: str, seen: set[str] | None = None) -> list[str]:
    """The requirements of a pyproject extra with self-references (vla-libero[a,b]) expanded."""
    seen = seen if seen is not None else set()
    if extra in seen:
        return []
    seen.add(extra)
    out = []
    for req in PYPROJECT["project"]["optional-dependencies"][extra]:
        m = re.fullmatch(r"vla-libero\[([\w,]+)\]", req.replace(" ", ""))
        if m:
            for sub in m.group(1).split(","):
                out += _extra_requirements(sub, seen)
        else:
            out.append(req)
    return out


def test_sim_image_carries_no_torch_and_has_headless_rendering():
    stages = parse(SERVICES["sim_client"])
    runs = [a for s in stages for a in s.all("RUN")]
    installs = [cmd for a in runs for cmd in a.split("&&") if "pip install" in cmd]
    assert any('"/src[sim]"' in a for a in installs), "the sim image installs the [sim] extra"
    assert not any(re.search(r"/src\[(?!sim\])", a) for a in installs), "the sim image installs another extra"
    assert not any(re.search(r"\btorch\b", a) for a in installs), "a pip install in the sim image names torch"
    requirements = _extra_requirements("sim") + PYPROJECT["project"]["dependencies"]
    names = {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}
    assert not names & {"torch", "torchvision", "transformers", "peft"}, names
    # The build fails if torch got in anyway (through install_sim.sh or a transitive dependency).
    assert any("find_spec('torch')" in a for a in stages[0].all("RUN"))
    final = stages[-1]
    apt = " ".join(a for a in final.all("RUN") if "apt-get install" in a)
    # The same Debian packages `make sim` installs (scripts/install_sim.sh's APT_PKGS).
    sim_pkgs = re.search(r"APT_PKGS=\(([^)]*)\)", (REPO / "scripts/install_sim.sh").read_text())
    wanted = set(sim_pkgs.group(1).split()) if sim_pkgs else {"libegl1", "libgl1", "libosmesa6"}
    assert wanted >= {"libegl1", "libosmesa6"}
    assert wanted <= set(apt.split()), f"sim image lacks {wanted - set(apt.split())} for headless rendering"
    env = " ".join(final.all("ENV"))
    assert "MUJOCO_GL=egl" in env
    assert exec_form(final.all("ENTRYPOINT")[-1]) == ["sim_client"]


def test_trainer_image_defaults_to_cpu_torch_with_a_cuda_switch():
    stages = parse(SERVICES["trainer"])
    builder_args = " ".join(stages[0].all("ARG"))
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in builder_args
    make_torch = re.search(r"TORCH_VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text()).group(1)
    assert f"TORCH_VERSION={make_torch}" in builder_args, "the image pins the Makefile's torch"
    assert stages[0].all("RUN")[0].count('--index-url "${TORCH_INDEX_URL}"') == 1
    entry = exec_form(stages[-1].all("ENTRYPOINT")[-1])
    assert entry[-1] == "/app/services/trainer/entrypoint.sh"
    script = (REPO / "services/trainer/entrypoint.sh").read_text()
    assert "scripts/train.sh" in script and "TRAIN_CONFIG" in script
