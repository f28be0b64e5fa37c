"""The scripted expert: BDDL goals it covers and refuses, real LIBERO successes on standard initial states."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.conftest import libero_missing
from tests.sim.conftest import no_torch_env, sim_client_cmd

BDDL = """(define (problem p) (:domain robosuite)
  (:objects a_1 - a  b_1 - b)
  (:goal
    (And (In a_1 b_1_contain_region) (On b_1 plate_1))
  )
)"""


def test_goal_atoms_from_bddl_text():
    from sim_client.expert_goals import goal_predicates

    assert goal_predicates(BDDL) == [["in", "a_1", "b_1_contain_region"], ["on", "b_1", "plate_1"]]
    assert goal_predicates("(:goal (Open drawer_1_top_region))") == [["open", "drawer_1_top_region"]]
    with pytest.raises(ValueError, match="no \\(:goal"):
        goal_predicates("(define (problem p))")


def test_covered_and_refused_tasks():
    reason = libero_missing()
    if reason:
        pytest.skip(reason)
    from sim_client.expert_goals import ExpertUnsupported, PickPlace, check_tasks, plan_task
    from sim_client.suites import get_tasks

    assert plan_task(get_tasks("libero_object")[0]) == [PickPlace("in", "alphabet_soup_1", "basket_1_contain_region")]
    assert plan_task(get_tasks("libero_spatial")[0]) == [PickPlace("on", "akita_black_bowl_1", "plate_1")]
    assert [g.obj for g in plan_task(get_tasks("libero_10")[0])] == ["alphabet_soup_1", "tomato_sauce_1"]
    check_tasks("libero_object", None)
    check_tasks("libero_spatial", None)
    with pytest.raises(ExpertUnsupported, match=r"libero_goal task 0 \('open the middle drawer of the cabinet'\)"):
        plan_task(get_tasks("libero_goal")[0])


@pytest.mark.libero
def test_cli_refuses_an_uncovered_task_before_starting(libero, tmp_path):
    out = subprocess.run(sim_client_cmd("--suite", "libero_goal", "--tasks", "7", "--policy", "expert",
                                        "--out", str(tmp_path / "eval")),
                         capture_output=True, text=True, timeout=120, env=no_torch_env())
    assert out.returncode == 1, out.stderr
    assert "libero_goal task 7 ('turn on the stove')" in out.stderr and "(turnon flat_stove_1)" in out.stderr
    assert not (tmp_path / "eval").exists()
    both = subprocess.run(sim_client_cmd("--suite", "libero_object", "--out", str(tmp_path / "x")),
                          capture_output=True, text=True, timeout=120, env=no_torch_env())
    assert both.returncode == 2 and "exactly one of --server URL and --policy expert" in both.stderr


@pytest.mark.libero
@pytest.mark.slow
def test_expert_succeeds_on_standard_initial_states(libero, tmp_path):
    """Two initial states each of libero_object task 0 and libero_spatial task 0, through the
    evaluation loop, in torch-free workers."""
    out = tmp_path / "eval"
    run = subprocess.run(sim_client_cmd("--suite", "libero_object,libero_spatial", "--tasks", "0", "--trials", "2",
                                        "--policy", "expert", "--workers", "2", "--out", str(out), "--no-progress"),
                         capture_output=True, text=True, timeout=900, env=no_torch_env())
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((x["suite"], x["trial"]) for x in lines) == [("libero_object", 0), ("libero_object", 1),
                                                              ("libero_spatial", 0), ("libero_spatial", 1)]
    assert all(x["success"] and x["error"] is None for x in lines), lines
    assert all(x["model_version"] == "expert-1" and x["queries"] == x["steps"] for x in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["rate"] == 1.0 and summary["server_model"] == "scripted-expert"
