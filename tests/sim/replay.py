"""Test hook: the sim client tells a scripted replay server where each episode is.

The replay server (`policy_server --scripted replay`) plays a recorded action sequence back;
it needs each request's position (`replay_step`) and episode (`replay_key`). The production
client sends neither: this module wraps `sim_client.episode.run_episode` so that, when the
server declares `scripted: replay`, every request of an episode carries them.

`install()` patches the current process; `tests/hooks/sitecustomize.py` calls it, with VLA_TEST_REPLAY=1, in
every process started with that directory on PYTHONPATH (the CLI and its spawned workers).
"""
from __future__ import annotations

import functools
from typing import Any


def install() -> None:
    import sim_client.episode as episode
    from sim_client.policy import RequestBuilder

    if getattr(episode.run_episode, "_replay_hook", False):
        return
    original_init = RequestBuilder.__init__

    @functools.wraps(original_init)
    def init(self, info, *args: Any, **kwargs: Any) -> None:
        original_init(self, info, *args, **kwargs)
        self.replay = info.scripted == "replay"   # a vla.wire.server_info.ServerInfo

    RequestBuilder.__init__ = init
    original = episode.run_episode

    @functools.wraps(original)
    def run_episode(env, policy, builder, spec, prompt, init_state, *, on_step=None, **kwargs):
        if not getattr(builder, "replay", False):
            return original(env, policy, builder, spec, prompt, init_state, on_step=on_step, **kwargs)
        position = {"step": 0}

        def count(step: int, obs: dict[str, Any]) -> None:
            position["step"] = step
            if on_step is not None:
                on_step(step, obs)

        return original(env, policy, _ReplayBuilder(builder, position, f"{spec.suite}/{spec.task_id}/{spec.trial}"),
                        spec, prompt, init_state, on_step=count, **kwargs)

    run_episode._replay_hook = True
    episode.run_episode = run_episode


class _ReplayBuilder:
    """The episode's RequestBuilder, plus the step index and episode key of each request."""

    def __init__(self, builder, position: dict[str, int], key: str):
        self._builder, self._position, self._key = builder, position, key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._builder, name)

    def build(self, obs: dict[str, Any], prompt: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        request = self._builder.build(obs, prompt, *args, **kwargs)
        request["replay_step"] = self._position["step"]
        request["replay_key"] = self._key
        return request
