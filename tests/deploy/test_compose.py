"""docker-compose.yml: valid for Debian's docker-compose, and wired the way the README says."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.deploy.conftest import run
from vla.wire import protocol

_CACHE: dict = {}
SERVICES = {"trainer", "policy-server", "sim-client", "prometheus", "grafana"}


def _config(docker_compose, env: dict[str, str] | None = None) -> dict:
    key = (docker_compose, tuple(sorted((env or {}).items())))
    if key not in _CACHE:   # each docker-compose run costs ~1 s
        # Only the given variables: the caller's own TRAIN_CONFIG etc. must not leak into the defaults.
        knobs = set(re.findall(r"\$\{(\w+)", (REPO / "docker-compose.yml").read_text()))
        base = {k: v for k, v in os.environ.items() if k not in knobs}
        out = run([docker_compose, "-f", str(REPO / "docker-compose.yml"), "config"], env={**base, **(env or {})})
        assert out.returncode == 0, f"docker-compose config failed:\n{out.stderr}"
        _CACHE[key] = yaml.safe_load(out.stdout)
    return copy.deepcopy(_CACHE[key])


def _started(services: dict, targets: list[str] | None = None, profiles: set[str] = frozenset()) -> set[str]:
    """Which services `docker compose [--profile P] up [targets]` starts (compose spec rules:
    named services and their dependencies, else every service whose profiles are enabled or empty)."""
    if targets:
        todo = list(targets)
    else:
        todo = [n for n, s in services.items() if not s.get("profiles") or set(s["profiles"]) & profiles]
    started = set()
    while todo:
        name = todo.pop()
        if name not in started:
            started.add(name)
            todo += list(services[name].get("depends_on", {}))
    return started


def test_compose_config_is_valid(docker_compose):
    cfg = _config(docker_compose)
    assert set(cfg["services"]) == SERVICES


def test_every_default_is_one_podman_compose_substitutes():
    # podman-compose 1.0.3 (Debian bookworm) matches ${VAR:-default} only with a non-empty default and
    # passes ${VAR:-} through literally (a token of "${POLICY_SERVER_TOKEN:-}"); a pass-through
    # variable is written as a bare key instead.
    text = (REPO / "docker-compose.yml").read_text()
    assert re.findall(r"\$\{\w+:?-\}", text) == []
    assert re.findall(r"\$\{(\w+):-", text), "the check found no defaults at all"


def test_compose_validator_rejects_a_broken_file(docker_compose, tmp_path):
    # Control: a dependency on a service that does not exist must fail validation.
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  a:\n    image: busybox:1.36\n    depends_on: [missing]\n")
    out = run([docker_compose, "-f", str(bad), "config"])
    assert out.returncode != 0 and "missing" in out.stderr


def test_profiles_start_only_what_each_path_needs(docker_compose):
    services = _config(docker_compose)["services"]
    assert _started(services, ["trainer"]) == {"trainer"}
    assert _started(services) == set(), "a bare `up` should start nothing by surprise"
    assert _started(services, profiles={"serve"}) == {"policy-server", "prometheus", "grafana"}
    assert _started(services, profiles={"eval"}) == SERVICES - {"trainer"}
    assert _started(services, ["sim-client"]) == {"sim-client", "policy-server"}


def test_trainer_takes_its_config_from_the_environment(docker_compose):
    default = _config(docker_compose)["services"]["trainer"]
    assert default["environment"]["TRAIN_CONFIG"].endswith("_tiny.py")
    assert default["environment"]["TRAIN_WORK_DIR"] == "work_dirs/demo"
    assert "work-dirs:/app/work_dirs:rw" in default["volumes"]
    other = _config(docker_compose, {"TRAIN_CONFIG": "configs/pi05/x.py"})["services"]["trainer"]
    assert other["environment"]["TRAIN_CONFIG"] == "configs/pi05/x.py"
    assert set(default["environment"]) >= {"MLP_WORKER_GPU", "MLP_WORKER_NUM", "MLP_ROLE_INDEX",
                                           "MLP_WORKER_0_HOST", "MLP_WORKER_0_PORT"}


def test_the_three_services_share_one_work_dirs_volume_or_host_directory(docker_compose):
    for env, source in (({}, "work-dirs"), ({"VLA_WORK_DIRS": "./work_dirs"}, str(REPO / "work_dirs"))):
        cfg = _config(docker_compose, {**env, "SERVE_WORK_DIR": "work_dirs/run1"})
        mounts = {name: [v for v in cfg["services"][name]["volumes"] if ":/app/work_dirs" in v]
                  for name in ("trainer", "policy-server", "sim-client")}
        assert mounts == {"trainer": [f"{source}:/app/work_dirs:rw"], "policy-server": [f"{source}:/app/work_dirs:ro"],
                          "sim-client": [f"{source}:/app/work_dirs:rw"]}, env
        server_cmd = cfg["services"]["policy-server"]["command"]
        assert server_cmd[server_cmd.index("--work-dir") + 1] == "/app/work_dirs/run1"
        assert "work-dirs" in cfg["volumes"]


def test_server_healthcheck_and_sim_client_wait_on_readiness(docker_compose):
    services = _config(docker_compose, {"SIM_SUITE": "libero_object"})["services"]
    server, sim = services["policy-server"], services["sim-client"]
    assert any(protocol.READY_PATH in part for part in server["healthcheck"]["test"])
    assert sim["depends_on"]["policy-server"]["condition"] == "service_healthy"
    cmd = sim["command"]
    assert cmd[cmd.index("--suite") + 1] == "libero_object"
    assert cmd[cmd.index("--server") + 1] == f"grpc://policy-server:{protocol.GRPC_PORT}"
    assert server["command"][server["command"].index("--host") + 1] == "0.0.0.0"
    published = {int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1].split("/")[0])
                 for p in server["ports"]}
    assert published == {protocol.GRPC_PORT, protocol.HTTP_PORT}


def test_monitoring_mounts_exist_and_match_the_configs(docker_compose):
    services = _config(docker_compose)["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] if job["job_name"] == "policy-server"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"policy-server:{protocol.HTTP_PORT}"]
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/vla.yml").read_text())
    dash_path = provider["providers"][0]["options"]["path"]
    assert any(v.startswith(str(REPO / "deploy/grafana/dashboards") + ":" + dash_path)
               for v in services["grafana"]["volumes"])


def test_every_built_image_names_an_existing_dockerfile(docker_compose):
    services = _config(docker_compose)["services"]
    built = {n: s for n, s in services.items() if "build" in s}
    assert set(built) == {"trainer", "policy-server", "sim-client"}
    for name, svc in built.items():
        assert (Path(svc["build"]["context"]) / svc["build"]["dockerfile"]).is_file()
        assert not svc["image"].endswith(":latest")
    for name in ("prometheus", "grafana"):
        assert ":" in services[name]["image"] and not services[name]["image"].endswith(":latest")
