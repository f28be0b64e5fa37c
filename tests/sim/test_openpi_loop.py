"""sim_client runs the same episodes as openpi's LIBERO loop (examples/libero/main.py).

`openpi_loop` below is this test's own re-implementation of that loop, written from its facts:
`np.random.seed(seed)`; per task one `OffScreenRenderEnv` (256×256 cameras) seeded once with
`env.seed(seed)` and reused for every trial; per trial `env.reset()`, then
`env.set_init_state(initial_states[trial])` from LIBERO's own benchmark API; `num_steps_wait`
(10) steps of the dummy action `[0]*6 + [-1]`; then, whenever the plan is empty, a query with
both cameras turned 180° and `resize_with_pad` to 224 (openpi_client's image_tools), the
8-dim state (eef pos, axis-angle, gripper qpos) and the prompt; `replan_steps` actions of the
reply are executed; the episode succeeds when the env reports done within `max_steps`
policy steps. It renders every camera on every step, as stock robosuite does.

The policy is deterministic and closed-loop (its actions depend on the state and the images
it is sent), so identical outcomes need identical observations: the test compares every
request's bytes too, not only success and steps.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import math
import pathlib

import numpy as np
import pytest

from sim_client.results import read_results
from sim_client.runner import EvalConfig, run_eval

pytestmark = [pytest.mark.libero, pytest.mark.slow]

# The facts of examples/libero/main.py.
OPENPI_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                    "libero_90": 400}
OPENPI_NUM_STEPS_WAIT, OPENPI_REPLAN_STEPS, OPENPI_RESIZE, OPENPI_SEED = 10, 5, 224, 7
DUMMY_ACTION = [0.0] * 6 + [-1.0]
SUITE, TASK_ID, TRIALS, MAX_STEPS = "libero_90", 0, (0, 1), 110


def _digest(request: dict) -> str:
    h = hashlib.sha1()
    for key in sorted(request):
        value = request[key]
        if isinstance(value, str):
            h.update(f"{key}={value}".encode())
        else:
            a = np.ascontiguousarray(value)
            h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


class DrawerPusher:
    """Closes libero_90 task 0's top drawer from what it is sent: above the drawer front, down,
    then push along -y. Stateless; a small image term makes its actions depend on the pixels."""

    WAYPOINTS = (np.array([0.005, 0.03, 1.16]), np.array([0.005, 0.03, 1.07]), np.array([0.005, -0.2, 1.07]))

    def __init__(self, log: str | None = None, chunk: int = 10):
        self.log, self.chunk = log, chunk

    def info(self):
        from vla.wire.server_info import ServerInfo

        return ServerInfo()   # declares nothing, as openpi's server: the client sends openpi's layout

    def _target(self, eef: np.ndarray) -> np.ndarray:
        above, down, pushed = self.WAYPOINTS
        if eef[2] < 1.085:
            return pushed
        return down if np.linalg.norm((eef - above)[:2]) < 0.02 else above

    def infer(self, request: dict) -> dict:
        if self.log:
            with open(self.log, "a") as f:
                f.write(_digest(request) + "\n")
        eef = np.asarray(request["observation/state"], np.float64)[:3].copy()
        pixels = float(np.asarray(request["observation/image"], np.float64).mean()) / 255.0
        rows = []
        for _ in range(self.chunk):
            err = self._target(eef) - eef
            move = np.clip(err * 8.0, -1, 1)
            rows.append(np.r_[move, 1e-3 * pixels, 0.0, 0.0, 1.0])
            eef = eef + move * 0.012   # what one step of that action roughly moves the hand
        return {"actions": np.asarray(rows, np.float32)}

    def close(self) -> None:
        pass


def _quat2axisangle(quat):
    quat = np.array(quat, dtype=np.float64)
    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def openpi_loop(suite: str, task_id: int, trials, policy, *, seed: int, replan_steps: int, max_steps: int,
                num_steps_wait: int = OPENPI_NUM_STEPS_WAIT, resize_size: int = OPENPI_RESIZE):
    """(success, policy steps) per trial, the way openpi's eval_libero runs them."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    from openpi_client import image_tools

    np.random.seed(seed)
    task_suite = benchmark.get_benchmark_dict()[suite]()
    task = task_suite.get_task(task_id)
    initial_states = task_suite.get_task_init_states(task_id)
    bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=256, camera_widths=256)
    env.seed(seed)
    out = {}
    try:
        for trial in trials:
            env.reset()
            plan = collections.deque()
            obs = env.set_init_state(initial_states[trial])
            t, steps, done = 0, 0, False
            while t < max_steps + num_steps_wait:
                if t < num_steps_wait:
                    obs, _, done, _ = env.step(DUMMY_ACTION)
                    t += 1
                    continue
                img = np.ascontiguousarray(obs["agentview_image"][::-1, ::-1])
                wrist = np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1])
                img = image_tools.convert_to_uint8(image_tools.resize_with_pad(img, resize_size, resize_size))
                wrist = image_tools.convert_to_uint8(image_tools.resize_with_pad(wrist, resize_size, resize_size))
                if not plan:
                    element = {
                        "observation/image": img,
                        "observation/wrist_image": wrist,
                        "observation/state": np.concatenate((obs["robot0_eef_pos"],
                                                             _quat2axisangle(obs["robot0_eef_quat"]),
                                                             obs["robot0_gripper_qpos"])),
                        "prompt": str(task.language),
                    }
                    chunk = policy.infer(element)["actions"]
                    assert len(chunk) >= replan_steps
                    plan.extend(chunk[:replan_steps])
                action = plan.popleft()
                obs, _, done, _ = env.step(action.tolist())
                steps += 1
                if done:
                    break
                t += 1
            out[trial] = (bool(done), steps)
    finally:
        env.close()
    return out


def test_step_budgets_are_openpis():
    from sim_client.suites import MAX_STEPS

    assert MAX_STEPS == OPENPI_MAX_STEPS
    cfg = EvalConfig()
    assert (cfg.num_steps_wait, cfg.resize_size, cfg.seed) == (OPENPI_NUM_STEPS_WAIT, OPENPI_RESIZE, OPENPI_SEED)


@pytest.mark.parametrize("replan", [OPENPI_REPLAN_STEPS, 10])
def test_sim_client_runs_openpis_episodes(libero, tmp_path, replan):
    pytest.importorskip("torch")   # LIBERO's benchmark API (the reference's init states) imports it
    ref_log, ours_log = tmp_path / "openpi.digests", tmp_path / "ours.digests"
    ref = openpi_loop(SUITE, TASK_ID, TRIALS, DrawerPusher(str(ref_log)), seed=OPENPI_SEED, replan_steps=replan,
                      max_steps=MAX_STEPS)
    cfg = EvalConfig(task_suite_name=SUITE, tasks=[TASK_ID], num_trials_per_task=len(TRIALS), max_steps=MAX_STEPS,
                     eval_chunk_size=replan, renderer=libero, progress=False, retries=0)
    result = run_eval(cfg, functools.partial(DrawerPusher, str(ours_log)), tmp_path / "eval", log=lambda m: None)
    ours = {x["trial"]: (x["success"], x["steps"]) for x in read_results(tmp_path / "eval/results.jsonl")}
    assert all(x["error"] is None and x["failure"] is None for x in read_results(tmp_path / "eval/results.jsonl"))
    assert ours == ref, f"openpi's loop {ref} vs sim_client {ours}"
    assert any(ok for ok, _ in ref.values()), f"the policy never succeeded: {ref}"
    assert ref_log.read_text().splitlines() == ours_log.read_text().splitlines()   # every observation sent
    assert result.summary["replan"]["steps"] == replan
