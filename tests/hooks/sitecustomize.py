"""Test-only fault hooks for subprocesses the tests start (trainer runs under torchrun).

A test puts this directory first on PYTHONPATH and sets one of these variables; production code has
no test hooks. The hooks patch a module right after it is first imported:

- `VLA_TEST_PAUSE_BEFORE_COMMIT=checkpoint_step_9.pt:60` - `vla.checkpoint.commit` of that
  checkpoint prints `test pause before commit of <name>` and sleeps 60 s first (every file of the
  checkpoint is written, nothing is sealed: the window a SIGKILL mid-save lands in).
- `VLA_TEST_STEP_DELAY_S=0.2` - every logged training step (`trainer.metrics.VLAMetric.log`)
  sleeps that long, so a test can SIGKILL a run of a fast tiny model at a chosen step.
- `VLA_TEST_REPLAY=1` - the sim client tells a scripted replay server each request's step and
  episode (tests/sim/replay.py), in the CLI and in its spawned workers.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time

_PAUSE = os.environ.get("VLA_TEST_PAUSE_BEFORE_COMMIT", "")
_DELAY = float(os.environ.get("VLA_TEST_STEP_DELAY_S", "0") or 0)


def _patch_checkpoint(module) -> None:
    target, _, seconds = _PAUSE.rpartition(":")
    commit = module.commit

    def paused_commit(work_dir, name, *args, **kwargs):
        if name == target:
            print(f"checkpoint: test pause before commit of {name}", flush=True)
            time.sleep(float(seconds))
        return commit(work_dir, name, *args, **kwargs)

    module.commit = paused_commit


def _patch_metrics(module) -> None:
    log = module.VLAMetric.log

    def slow_log(self, *args, **kwargs):
        record = log(self, *args, **kwargs)
        time.sleep(_DELAY)
        return record

    module.VLAMetric.log = slow_log


_PATCHES = {}
if _PAUSE:
    _PATCHES["vla.checkpoint"] = _patch_checkpoint
if _DELAY:
    _PATCHES["trainer.metrics"] = _patch_metrics


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _PATCHES:
    sys.meta_path.insert(0, _PatchAfterImport())
if os.environ.get("VLA_TEST_REPLAY") == "1":
    from tests.sim.replay import install

    install()
