"""Dependencies point one way: the processes import the library, never the library a process.

Allowed imports between the repository's packages (docs/ARCHITECTURE.md, "Packages"):

    vla            -> (nothing of ours)
    sim_client     -> vla
    policy_server  -> vla
    trainer        -> vla
    demo           -> everything (it drives the three processes)

Every import statement is read with `ast`, lazy ones inside functions included.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("vla", "sim_client", "policy_server", "trainer", "demo")
OURS = PACKAGES + ("tests", "scripts", "benchmarks")
ALLOWED = {
    "vla": {"vla"},
    "sim_client": {"sim_client", "vla"},
    "policy_server": {"policy_server", "vla"},
    "trainer": {"trainer", "vla"},
    "demo": set(PACKAGES),
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `path` that names one of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in OURS]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_it_may(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    bad = [f"{f.relative_to(REPO)}:{line}: imports {name}"
           for f in files for line, name in imported_packages(f) if name not in ALLOWED[package]]
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(bad)


def test_the_walker_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\ndef f():\n    from sim_client.env import LiberoEnv\n    import trainer.cli\n")
    assert imported_packages(probe) == [(4, "sim_client"), (5, "trainer")]
