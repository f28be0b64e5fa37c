"""LIBERO suites, tasks and initial states, read without torch and without LIBERO's stdin prompt.

`libero.libero.benchmark` imports torch at module level and reads init states with
`torch.load`; importing `libero.libero` the first time asks on stdin where to keep its config.
This module avoids all three: it writes LIBERO's config itself (in its own directory, named by
LIBERO_CONFIG_PATH), reads the suite task map straight from its source file, and unpickles the
init-state archives (torch zip files holding one pickled numpy array) with a restricted
unpickler that only admits numpy reconstruction.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
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
class Task:
    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: Path
    init_states_file: Path


def _libero_root() -> Path:
    """Directory of the installed `libero/libero` package, found without importing it."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise LiberoNotInstalled("LIBERO is not installed: run `make sim` (scripts/install_sim.sh)")
    root = Path(list(spec.submodule_search_locations)[0]) / "libero"
    if not (root / "bddl_files").is_dir():
        raise LiberoNotInstalled(f"LIBERO at {root} has no bddl_files/: reinstall with `make sim`")
    return root


def ensure_libero_config(config_dir: str | os.PathLike | None = None) -> Path:
    """Write LIBERO's config.yaml (if absent) and point LIBERO_CONFIG_PATH at it.

    Must run before the first `import libero.libero`, which otherwise prompts on stdin.
    """
    from vla.io import atomic_write_text

    config_dir = Path(config_dir or os.environ.get("LIBERO_CONFIG_PATH") or DEFAULT_CONFIG_DIR)
    root = _libero_root()
    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(root / "assets"),
    }
    config_file = config_dir / "config.yaml"
    text = "".join(f"{k}: {v}\n" for k, v in paths.items())
    if not config_file.exists() or config_file.read_text() != text:
        atomic_write_text(config_file, text)
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    if not (root / "assets" / "scenes").is_dir():
        raise LiberoNotInstalled(f"LIBERO assets missing at {root / 'assets'}: run `make sim`")
    return config_file


@functools.lru_cache(maxsize=1)
def _task_map() -> dict[str, list[str]]:
    path = _libero_root() / "benchmark" / "libero_suite_task_map.py"
    spec = importlib.util.spec_from_file_location("_libero_suite_task_map", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a plain dict literal; importing it here avoids torch
    return dict(module.libero_task_map)


def suite_names() -> list[str]:
    return list(_task_map())


def _language(task_name: str) -> str:
    # LIBERO's grab_language_from_filename: scene-prefixed names drop "SCENEn_" (or "SCENE10_").
    if task_name[0].isupper():
        cut = task_name.find("SCENE") + (8 if "SCENE10" in task_name else 7)
        return " ".join(task_name[cut:].split("_"))
    return " ".join(task_name.split("_"))


def get_tasks(suite: str) -> list[Task]:
    """Tasks of a suite in LIBERO's default order (task_order_index 0: the map's order)."""
    task_map = _task_map()
    if suite not in task_map:
        raise SimClientError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(task_map)}")
    root = _libero_root()
    return [Task(suite=suite, task_id=i, name=name, language=_language(name),
                 bddl_file=root / "bddl_files" / suite / f"{name}.bddl",
                 init_states_file=root / "init_files" / suite / f"{name}.pruned_init")
            for i, name in enumerate(task_map[suite])]


def max_steps(suite: str) -> int:
    if suite not in MAX_STEPS:
        raise SimClientError(f"no default step budget for suite {suite!r}; pass --max-steps "
                         f"(known: {', '.join(MAX_STEPS)})")
    return MAX_STEPS[suite]


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
    """Read a LIBERO `.pruned_init` / `.init` file (torch.save of a numpy array) without torch."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise SimClientError(f"{path}: torch archive without data.pkl")
            data = zf.read(pkl)
    except zipfile.BadZipFile:
        data = path.read_bytes()  # legacy (pre-1.6) torch.save format of a pickled object
    states = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    states = np.asarray(states)
    if states.ndim != 2:
        raise SimClientError(f"{path}: expected [trials, state_dim] init states, got shape {states.shape}")
    return states
