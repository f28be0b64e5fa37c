"""Make the demonstration the replay tests use: tests/sim/fixtures/close_drawer_demo.json.

LIBERO's recorded demonstrations are a download this machine cannot make, so a scripted
controller writes one: from trial 0's initial state of libero_90 task 0 ("close the top drawer
of the cabinet", the drawer starts open) it moves the closed gripper in front of the drawer and
pushes it shut. Replayed blind by a policy server from the same seed and initial state, these
actions must succeed; no-ops from the same state must not.

    python -m tests.sim.make_demo
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SUITE, TASK_ID, TRIAL, SEED, WAIT = "libero_90", 0, 0, 7, 10
FIXTURE = Path(__file__).parent / "fixtures" / "close_drawer_demo.json"


def scripted_actions(max_steps: int = 200) -> tuple[list[list[float]], bool]:
    from sim_client.env import NOOP_ACTION, LiberoEnv
    from sim_client.suites import get_tasks, load_init_states

    task = get_tasks(SUITE)[TASK_ID]
    env = LiberoEnv(task, render="query")
    try:
        obs = env.reset(SEED, load_init_states(task.init_states_file)[TRIAL])
        for _ in range(WAIT):
            obs, _ = env.step(NOOP_ACTION)
        # In front of the open top drawer (it slides along -y to close), then push it in.
        waypoints = [np.array([0.005, 0.03, 1.16]), np.array([0.005, 0.03, 1.07]), np.array([0.005, -0.2, 1.07])]
        actions, done, wp, n = [], False, 0, 0
        for _ in range(max_steps):
            err = waypoints[wp] - np.asarray(obs["robot0_eef_pos"])
            n += 1
            if (np.linalg.norm(err) < 0.015 or n > 40) and wp < len(waypoints) - 1:
                wp, n = wp + 1, 0
                err = waypoints[wp] - np.asarray(obs["robot0_eef_pos"])
            action = np.r_[np.clip(err * 12.0, -1, 1), 0.0, 0.0, 0.0, 1.0].round(6)
            obs, done = env.step(action)
            actions.append([float(a) for a in action])
            if done:
                break
        return actions, bool(done)
    finally:
        env.close()


def main() -> None:
    actions, ok = scripted_actions()
    print(f"{SUITE} task {TASK_ID} trial {TRIAL}: {'success' if ok else 'failure'} after {len(actions)} steps")
    if not ok:
        raise SystemExit(1)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps({"suite": SUITE, "task_id": TASK_ID, "trial": TRIAL, "seed": SEED,
                                   "num_steps_wait": WAIT, "actions": actions}) + "\n")


if __name__ == "__main__":
    main()
