"""On PYTHONPATH in the sim tests (tests/sim/conftest.py): every process started with it, the sim client
CLI and its spawned workers, tells a scripted replay server each request's step and episode
(tests/sim/replay.py). The production client sends neither."""
from tests.sim.replay import install

install()
