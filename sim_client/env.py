"""One LIBERO task environment, with render-on-query.

robosuite renders every camera observable on every control step (inside `env.step`, at the
substep where the observable's sampling clock fires). Rendering is >90% of a step on a CPU
and does not touch the physics, so in `render="query"` mode the camera sensors are wrapped:
they return a placeholder unless the caller asked for images on this step, in which case the
real sensor runs at exactly the same substep as in stock robosuite. States are therefore
identical in both modes and the images the policy sees are bit-identical (tests/sim prove
it); only frames nobody looks at are skipped.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sim_client.suites import BENCHMARK_BY_KEY, Task, env_class

RESOLUTION = 256
CAMERAS = ("agentview", "robot0_eye_in_hand")
NOOP_ACTION = [0.0] * 6 + [-1.0]
RENDER_MODES = ("query", "every")


class LiberoEnv:
    """An OffScreenRenderEnv for one task, reused across that task's trials."""

    def __init__(self, task: Task, *, resolution: int = RESOLUTION, render: str = "query",
                 cameras: tuple[str, ...] = CAMERAS):
        if render not in RENDER_MODES:
            raise ValueError(f"render mode {render!r}: expected one of {RENDER_MODES}")
        # The task's benchmark's env class, imported after its config exists (no stdin prompt).
        OffScreenRenderEnv = env_class(BENCHMARK_BY_KEY[task.benchmark])

        self.task = task
        self.render_mode = render
        self.image_keys = tuple(f"{c}_image" for c in cameras)
        self._want: frozenset[str] = frozenset()  # cameras the lazy sensors render now
        self.renders = 0  # camera sensor calls that really rendered (for tests and benchmarks)
        self._seeded: int | None = None   # the seed np.random was given, and the resets since (reset())
        self._resets = 0
        self._env = OffScreenRenderEnv(bddl_file_name=str(task.bddl_file), camera_names=list(cameras),
                                       camera_heights=resolution, camera_widths=resolution)
        self._blank = np.zeros((resolution, resolution, 3), np.uint8)
        if render == "query":
            inner = self._env.env
            create_camera_sensors = inner._create_camera_sensors

            # A hard reset (every env.reset) rebuilds the observables from this factory: make its
            # camera sensors lazy from birth, so building them renders nothing either.
            def lazy_camera_sensors(*args, **kwargs):
                sensors, names = create_camera_sensors(*args, **kwargs)
                return [self._lazy(n, f) if n in self.image_keys else f for f, n in zip(sensors, names)], names

            inner._create_camera_sensors = lazy_camera_sensors
            for name in self.image_keys:  # the observables built by the constructor
                inner.modify_observable(name, "sensor", self._lazy(name, inner._observables[name]._sensor))
        self._set_render(False)

    def _lazy(self, name: str, sensor):
        def lazy_sensor(obs_cache):
            if name in self._want:
                self.renders += 1
                return sensor(obs_cache)
            return self._blank

        lazy_sensor.__modality__ = sensor.__modality__
        return lazy_sensor

    @property
    def sim(self):
        return self._env.sim

    @property
    def problem(self):
        """The LIBERO problem env inside the wrapper (BDDL objects, sites, goal predicates)."""
        return self._env.env

    def _obs(self, obs: dict[str, Any], rendered: frozenset[str]) -> dict[str, Any]:
        # Placeholders must never reach a policy or a video.
        return {k: v for k, v in obs.items() if k not in self.image_keys or k in rendered}

    def _set_render(self, render) -> frozenset[str]:
        """`render`: True (all cameras), False, or the camera observation keys to render."""
        if self.render_mode == "every" or render is True:
            want = frozenset(self.image_keys)
        elif not render:
            want = frozenset()
        else:
            unknown = set(render) - set(self.image_keys)
            if unknown:
                raise ValueError(f"cannot render {sorted(unknown)}: this env has cameras {self.image_keys}")
            want = frozenset(render)
        self._want = want
        return want

    def reset(self, seed: int, init_state: np.ndarray | None, *, trial: int = 0, render=False) -> dict[str, Any]:
        """reset → trial `trial`'s fixed initial state, numpy's RNG where openpi's loop has it (below).

        `init_state=None` keeps the reset's own placement: every object sampled in its BDDL
        region from the seeded random state (what recordings start from)."""
        if init_state is None:
            rendered = self._set_render(render)
            self._env.seed(seed)
            self._seeded = None   # the next trial reseeds
            return self._obs(self._env.reset(), rendered)
        self._set_render(False)
        # openpi seeds a task's env once (`env.seed(seed)`, i.e. np.random.seed) and resets it once
        # per trial, in trial order. A reset draws from np.random (a hard reset re-places the
        # fixtures, which the initial state does not cover), so trial k's scene depends on the k
        # resets before it. Resets since seeding are counted: trials run in order cost nothing
        # extra; any other (a worker given trials 0, 2, 4, a retry, a video replay) reseeds and
        # replays the missing resets first. `trial=0` reseeds every time.
        if self._seeded != seed or trial < self._resets:
            self._env.seed(seed)
            self._seeded, self._resets = seed, 0
        while self._resets < trial:
            self._env.reset()
            self._resets += 1
        self._env.reset()
        self._resets += 1
        rendered = self._set_render(render)
        return self._obs(self._env.set_init_state(init_state), rendered)

    def step(self, action, *, render=False) -> tuple[dict[str, Any], bool]:
        """One control step; camera images are in the observation only when `render`."""
        rendered = self._set_render(render)
        obs, _reward, done, _info = self._env.step(np.asarray(action, dtype=np.float64).tolist())
        return self._obs(obs, rendered), bool(done)

    def render_now(self) -> dict[str, np.ndarray]:
        """Images of the current state (for a video's outcome frame), outside the sampling clock."""
        self._set_render(True)
        inner = self._env.env
        try:
            return {k: np.array(inner._observables[k]._sensor({})) for k in self.image_keys}
        finally:
            self._set_render(False)

    def state(self) -> np.ndarray:
        return np.asarray(self._env.get_sim_state()).copy()

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:  # closing a half-built GL context must not hide the real error
            pass
