"""The commands that the images, docker-compose.yml and deploy/k8s run are accepted by the real
CLIs: argument lists go through each CLI's own parser, and the trainer's torchrun command is
printed by scripts/train.sh (VLA_TRAIN_DRY_RUN=1) from each pod's MLP_WORKER_* environment."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from tests.conftest import REPO
from tests.deploy.conftest import DEPLOY, load_yaml_docs
from tests.deploy.dockerfile_parse import exec_form, parse

K8S = DEPLOY / "k8s"


def _k8s(kind: str, name: str) -> dict:
    for path in K8S.rglob("*.yaml"):
        for doc in load_yaml_docs(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise KeyError((kind, name))


def _container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def _compose_services() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def _compose_defaults(value: str) -> str:
    """${VAR:-default} -> default (what compose substitutes when VAR is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_policy_server_accepts_the_image_compose_and_k8s_arguments():
    from policy_server.cli import build_parser

    parser = build_parser()
    image_cmd = exec_form(parse(REPO / "services/policy_server/Dockerfile")[-1].all("CMD")[-1])
    compose_cmd = _compose_services()["policy-server"]["command"]
    k8s_args = _container(_k8s("Deployment", "vla-policy-server"))["args"]
    for args in (image_cmd, compose_cmd, k8s_args):
        ns = parser.parse_args(args)
        assert ns.work_dir and ns.host == "0.0.0.0" and (ns.grpc_port, ns.http_port) == (50051, 8000)


def _dry_run(argv: list[str], env: dict[str, str]) -> list[str]:
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VENV": sys.prefix, **env, "VLA_TRAIN_DRY_RUN": "1",
                              "VLA_DIST_BACKEND": "gloo"})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _flag(cmd: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}="))


def test_training_job_pods_become_one_torchrun_group():
    job = _k8s("Job", "vla-train")
    c = _container(job)
    nodes = job["spec"]["completions"]
    for index in range(nodes):
        # What the pod sees: literal values, and the completion index from the annotation.
        env = {e["name"]: e.get("value", str(index)) for e in c["env"]}
        cmd = _dry_run(["bash", "scripts/train.sh", *c["args"]], env)
        assert _flag(cmd, "nnodes") == str(nodes) and _flag(cmd, "node_rank") == str(index)
        assert _flag(cmd, "master_addr") == "vla-train-0.vla-train" and _flag(cmd, "master_port") == "29500"
        assert _flag(cmd, "nproc_per_node") == env["MLP_WORKER_GPU"]
        assert cmd[-len(c["args"]):] == c["args"] and cmd[-len(c["args"]) - 2:-len(c["args"])] == ["-m", "trainer.cli"]


def test_compose_trainer_entrypoint_trains_the_env_config(tmp_path):
    svc = _compose_services()["trainer"]
    env = {k: _compose_defaults(str(v)) for k, v in svc["environment"].items() if v is not None}
    cmd = _dry_run(["bash", "services/trainer/entrypoint.sh"],
                   {**env, "VLA_APP_DIR": str(REPO), "PREPARE_DEMO_DATA": "never"})
    assert cmd[-2:] == [env["TRAIN_CONFIG"], env["TRAIN_WORK_DIR"]]
    assert (REPO / env["TRAIN_CONFIG"]).is_file()
    assert _flag(cmd, "nnodes") == "1" and _flag(cmd, "node_rank") == "0"
    # Arguments given to the container go to train.sh unchanged.
    cmd = _dry_run(["bash", "services/trainer/entrypoint.sh", env["TRAIN_CONFIG"], str(tmp_path / "wd"), "--resume"],
                   {"VLA_APP_DIR": str(REPO)})
    assert cmd[-3:] == [env["TRAIN_CONFIG"], str(tmp_path / "wd"), "--resume"]


def test_trainer_entrypoint_makes_the_demo_data_it_defaults_to(tmp_path):
    data, tokenizer = tmp_path / "data", tmp_path / "tokenizer"
    cmd = _dry_run(["bash", "services/trainer/entrypoint.sh"],
                   {"VLA_APP_DIR": str(REPO), "DEMO_DATA_ROOT": str(data), "DEMO_TOKENIZER_DIR": str(tokenizer),
                    "DEMO_EPISODES": "2", "TRAIN_WORK_DIR": str(tmp_path / "wd")})
    assert cmd[-1] == str(tmp_path / "wd")
    from vla.data.reader import LeRobotReader

    assert LeRobotReader(data).num_episodes == 2
    assert (tokenizer / "tokenizer.json").is_file()


def test_trainer_entrypoint_keeps_a_dataset_it_is_given_and_builds_only_its_tokenizer(tmp_path):
    # `make images-test` seeds the volume with recorded LIBERO episodes and no tokenizer.
    from vla.data.reader import LeRobotReader
    from vla.data.synthetic import write_synthetic_libero_dataset

    data, tokenizer = tmp_path / "data", tmp_path / "tokenizer"
    write_synthetic_libero_dataset(data, num_episodes=1)
    info = (data / "meta" / "info.json").read_bytes()
    _dry_run(["bash", "services/trainer/entrypoint.sh"],
             {"VLA_APP_DIR": str(REPO), "DEMO_DATA_ROOT": str(data), "DEMO_TOKENIZER_DIR": str(tokenizer),
              "DEMO_EPISODES": "3", "TRAIN_WORK_DIR": str(tmp_path / "wd")})
    assert (data / "meta" / "info.json").read_bytes() == info and LeRobotReader(data).num_episodes == 1
    assert (tokenizer / "tokenizer.json").is_file()
