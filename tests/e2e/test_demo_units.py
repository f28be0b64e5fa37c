"""The demo's own logic without processes: latency quantiles from a real Prometheus histogram,
config path overrides for every family, step markers, the recorder's controller."""
from __future__ import annotations

import json

import pytest

from demo import cli as demo
from demo.report import histogram_quantile, server_latency
from sim_client.record import episode_seeds, plan_episodes


def test_latency_quantiles_from_a_real_prometheus_histogram(tmp_path):
    from policy_server.metrics import Metrics

    m = Metrics()
    for s in [0.003] * 50 + [0.03] * 49 + [3.0]:  # 50 in (2,5] ms, 49 in (20,50] ms, 1 in (2,5] s
        m.duration.labels(transport="grpc").observe(s)
    m.duration.labels(transport="ws").observe(0.003)
    m.requests.labels(transport="grpc", code="OK").inc(100)
    (tmp_path / "m.prom").write_bytes(m.render())
    lat = server_latency(tmp_path / "m.prom")
    assert lat["requests"] == 101 and lat["by_code"] == {"grpc/OK": 100}
    # rank 50.5 of 101: just past the (2,5] ms bucket (51 observations) -> inside it, near its top.
    assert 2.0 < lat["p50_ms"] <= 5.0
    assert 20.0 < lat["p99_ms"] <= 50.0  # rank 99.99: the last of the (20,50] ms bucket
    assert server_latency(tmp_path / "missing.prom") is None


def test_histogram_quantile_matches_prometheus_interpolation():
    buckets = [(0.1, 10.0), (0.2, 30.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)       # rank 10: top of the first
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)       # rank 20: middle of (0.1, 0.2]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2)       # +Inf bucket: its lower edge
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


@pytest.mark.parametrize("family", list(demo.CONFIGS))
def test_every_tokenizer_and_data_path_of_each_tiny_config_is_redirected(family, tmp_path):
    from vla.config import Config

    _, config = demo.resolve_config(family)
    options = demo.path_overrides(config, tmp_path / "data", tmp_path / "tok")
    cfg = Config.fromfile(config, options).to_plain()
    text = json.dumps(cfg)
    assert demo.DEFAULT_TOKENIZER not in text and demo.DEFAULT_DATA_ROOT not in text, family
    assert str(tmp_path / "data") in text and str(tmp_path / "tok") in text


def test_config_names_and_errors():
    assert demo.resolve_config("PI0.5")[0] == "pi05" and demo.resolve_config("groot")[0] == "gr00t"
    with pytest.raises(demo.DemoError, match="choose one of pi0, pi05, gr00t"):
        demo.resolve_config("pi7")


def test_a_marker_skips_its_step_and_other_parameters_are_refused(tmp_path):
    ran = []
    steps = demo.Steps(log=lambda m: None)
    steps.run("train", tmp_path, {"n": 1}, lambda: ran.append(1), tmp_path)
    steps.run("train", tmp_path, {"n": 1}, lambda: ran.append(2), tmp_path)
    assert ran == [1] and json.loads((tmp_path / ".demo" / "train.json").read_text())["params"] == {"n": 1}
    with pytest.raises(demo.DemoError, match=f"delete {tmp_path}"):
        steps.run("train", tmp_path, {"n": 2}, lambda: ran.append(3), tmp_path)


def test_a_failed_step_writes_no_marker(tmp_path):
    steps = demo.Steps(log=lambda m: None)
    with pytest.raises(RuntimeError):
        steps.run("eval", tmp_path, {}, lambda: (_ for _ in ()).throw(RuntimeError("boom")), tmp_path)
    assert not (tmp_path / ".demo" / "eval.json").exists()


def test_recording_plan_and_reset_seeds():
    assert plan_episodes([3, 5], 2) == [(3, 0), (3, 1), (5, 0), (5, 1)]
    seeds = [set(episode_seeds(100_000, t, e)) for t in (0, 1) for e in (0, 1, 2)]
    assert all(not (a & b) for i, a in enumerate(seeds) for b in seeds[i + 1:])  # every episode its own seeds
    assert min(min(s) for s in seeds) > 7  # evaluation resets with seed 7


def test_demo_config_from_the_environment_and_its_work_dir(monkeypatch):
    monkeypatch.setenv("DEMO_CONFIG", "gr00t")
    args = demo.parse_args([])
    family, config = demo.resolve_config(args.config)
    assert family == "gr00t" and config.name == "gr00t_eagle_3b_libero_10_full_train_tiny.py"
    assert demo.parse_args(["--config", "pi05"]).config == "pi05"  # the flag wins
