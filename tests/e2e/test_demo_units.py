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


def _libero_tasks(suite):
    from tests.conftest import libero_missing, skip_or_fail

    reason = libero_missing()
    if reason:
        skip_or_fail(reason)
    from sim_client.suites import get_tasks

    return get_tasks(suite)


def test_the_demo_evaluates_the_tasks_its_dataset_holds(tmp_path):
    from vla.data.synthetic import write_synthetic_libero_dataset

    tasks = _libero_tasks("libero_object")
    root = write_synthetic_libero_dataset(tmp_path / "data", num_episodes=3, episode_length=4, image_size=16,
                                          tasks=[tasks[5].language, tasks[3].language])
    assert demo.dataset_tasks(root, "libero_object") == [3, 5]
    args = demo.parse_args(["--trials", "12", "--tasks", "0"])  # --tasks names what to record, not what to score
    flags = demo.eval_arguments(args, demo.dataset_tasks(root, "libero_object"))
    assert flags[flags.index("--suite") + 1] == "libero_object" and flags[flags.index("--tasks") + 1] == "3,5"
    assert flags[flags.index("--trials") + 1] == "12" and "--max-steps" not in flags  # the suite's budget
    other = write_synthetic_libero_dataset(tmp_path / "other", num_episodes=1, episode_length=4, image_size=16,
                                           tasks=[_libero_tasks("libero_10")[0].language])
    with pytest.raises(demo.DemoError, match="are not libero_object tasks"):
        demo.dataset_tasks(other, "libero_object")


def test_the_reported_success_rate_is_the_one_in_results_jsonl(tmp_path):
    from demo.report import final_report
    from vla.data.synthetic import write_synthetic_libero_dataset

    data = write_synthetic_libero_dataset(tmp_path / "data", num_episodes=2, episode_length=4, image_size=16,
                                          tasks=["pick up the ketchup and place it in the basket"])
    work = tmp_path / "work"
    (work / "eval").mkdir(parents=True)
    (work / "config.json").write_text(json.dumps({"model": {"type": "PI0FlowMatching",
                                                            "pretrained_name_or_path": None},
                                                  "runner": {"max_steps": 123}}))
    (work / "latest").write_text("checkpoint_step_123.pt\n")
    outcomes = [True, False, True, True, None]  # None: an infrastructure error, outside the rate
    with open(work / "eval" / "results.jsonl", "w") as f:
        for trial, ok in enumerate(outcomes):
            f.write(json.dumps({"suite": "libero_object", "task_id": 7, "trial": trial, "task": "t",
                                "success": bool(ok), "error": "boom" if ok is None else None, "steps": 9}) + "\n")
    report = final_report(work, work / "eval", data, {})
    assert "overall success rate: 75.0% (3/4), 1 infrastructure errors" in report, report
    assert "not expected to succeed" not in report and "0% is the honest" not in report
    measured = " ".join(report[report.index("Measured:"):].split("\n\n")[0].split())
    assert "PI0FlowMatching trained here from scratch for 123 steps (checkpoint_step_123.pt)" in measured
    assert "on 2 recorded demonstrations (8 frames, 1 task(s))" in measured
    assert "libero_object task 7, 5 standard initial state(s) each: 3/4 succeeded (1 infrastructure" in measured
