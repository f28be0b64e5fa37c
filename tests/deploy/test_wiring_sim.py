"""The sim client's CLI accepts what docker-compose.yml and the eval Jobs run, and the merge
Job's command joins shard results."""
from __future__ import annotations

import json


from tests.deploy.test_wiring import _compose_defaults, _compose_services, _container, _expand, _k8s


def _sim_parser():
    from sim_client import cli

    return cli


def test_sim_client_accepts_the_compose_and_eval_job_arguments():
    cli = _sim_parser()
    parser = cli.build_parser()
    compose = [_compose_defaults(a) for a in _compose_services()["sim-client"]["command"]]
    ns = parser.parse_args(compose)
    assert ns.suite == "libero_10" and ns.server == "grpc://policy-server:50051"
    job = _k8s("Job", "vla-eval")
    c = _container(job)
    completions = job["spec"]["completions"]
    for index in (0, completions - 1):
        env = {e["name"]: e.get("value", str(index)) for e in c["env"] if "secretKeyRef" not in e.get("valueFrom", {})}
        ns = parser.parse_args(_expand(c["args"], env))
        assert ns.shard == f"{index}/{completions}" and ns.out.endswith(f"/shards/{index}")


def test_sim_client_merge_step_runs_on_shard_results(tmp_path):
    """The merge Job's command, pointed at two shard dirs holding results.jsonl lines."""
    cli = _sim_parser()
    merge_args = _container(_k8s("Job", "vla-eval-merge"))["args"]
    assert merge_args[0] == "merge"
    shards = []
    for i in range(2):
        d = tmp_path / "shards" / str(i)
        d.mkdir(parents=True)
        line = dict(suite="libero_10", task_id=i, task=f"task {i}", trial=0, seed=7, success=bool(i), steps=10,
                    error=None, duration_s=1.0, video=None)
        (d / "results.jsonl").write_text(json.dumps(line) + "\n")
        shards.append(str(d))
    out = tmp_path / "merged"
    rc = cli.main(["merge", str(out), *shards])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((x["task_id"], x["success"]) for x in lines) == [(0, False), (1, True)]


