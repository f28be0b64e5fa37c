"""deploy/k8s: every manifest passes kubernetes-validate --strict, and the pieces fit together
(selectors, probes, MLP_WORKER_* for torchrun, one eval shard per index, the merge step)."""
from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.conftest import DEPLOY, K8S_MANIFESTS, load_yaml_docs, run
from vla.wire import protocol

K8S = DEPLOY / "k8s"


def _objects() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for f in K8S_MANIFESTS for d in load_yaml_docs(f)}


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("manifest", K8S_MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_kubernetes_validate_strict(kubernetes_validate, manifest):
    out = run([kubernetes_validate, "--strict", str(manifest)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(load_yaml_docs(manifest))


def test_kubernetes_validate_rejects_an_unknown_field(kubernetes_validate, tmp_path):
    # Control: --strict must reject a misspelt field (a typo Kubernetes would silently drop).
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
                                   "spec": {"completionsMode": "Indexed", "template": {"spec": {
                                       "restartPolicy": "Never", "containers": [{"name": "c", "image": "i:1"}]}}}}))
    assert run([kubernetes_validate, "--strict", str(bad)]).returncode != 0


def test_every_pod_runs_non_root_from_a_pinned_project_image():
    images = {"vla-libero/trainer", "vla-libero/policy-server", "vla-libero/sim-client"}
    for (kind, name), obj in _objects().items():
        if kind not in ("Deployment", "Job"):
            continue
        spec = _pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"]:
            repo, _, tag = c["image"].rpartition(":")
            assert repo in images and tag and tag != "latest", f"{name}: image {c['image']}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in c["resources"]["limits"], f"{name}: no memory limit"


def test_server_deployment_probes_services_hpa_and_pdb_fit():
    objs = _objects()
    dep = objs[("Deployment", "vla-policy-server")]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    c = _pod_spec(dep)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": protocol.GRPC_PORT, "http": protocol.HTTP_PORT}
    assert c["readinessProbe"]["httpGet"]["path"] == protocol.READY_PATH
    assert c["livenessProbe"]["httpGet"]["path"] == protocol.HEALTH_PATH
    assert c["startupProbe"]["httpGet"]["path"] == protocol.HEALTH_PATH
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"
    # Grace period covers preStop + the server's drain deadline (policy_server --drain-timeout-s 30).
    assert _pod_spec(dep)["terminationGracePeriodSeconds"] >= c["lifecycle"]["preStop"]["sleep"]["seconds"] + 30
    for svc_name in ("vla-policy-server", "vla-policy-server-pods"):
        svc = objs[("Service", svc_name)]
        assert svc["spec"]["selector"].items() <= labels.items(), svc_name
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports
    hpa = objs[("HorizontalPodAutoscaler", "vla-policy-server")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vla-policy-server"}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "policy_inflight_requests"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = objs[("PodDisruptionBudget", "vla-policy-server")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "the PDB would block every node drain"
    # Prometheus (k8s config) finds the pods through the headless Service's DNS name.
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus-k8s.yml").read_text())
    dns = next(j for j in prom["scrape_configs"] if j["job_name"] == "policy-server")["dns_sd_configs"][0]
    assert dns["names"] == [f"vla-policy-server-pods.{dep['metadata']['namespace']}.svc.cluster.local"]
    assert dns["port"] == protocol.HTTP_PORT


def test_training_job_maps_pods_onto_torchrun_through_mlp_worker_vars():
    objs = _objects()
    job = objs[("Job", "vla-train")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = _pod_spec(job)
    env = _env(pod["containers"][0])
    assert set(env) >= {"MLP_WORKER_GPU", "MLP_WORKER_NUM", "MLP_ROLE_INDEX", "MLP_WORKER_0_HOST", "MLP_WORKER_0_PORT"}
    assert int(env["MLP_WORKER_NUM"]["value"]) == spec["completions"]
    assert env["MLP_ROLE_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # Pod 0 is reachable as <job>-0.<subdomain>, through a headless Service named like the subdomain.
    assert env["MLP_WORKER_0_HOST"]["value"] == f"vla-train-0.{pod['subdomain']}"
    svc = objs[("Service", pod["subdomain"])]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "vla-train"}
    port = int(env["MLP_WORKER_0_PORT"]["value"])
    assert port in {p["port"] for p in svc["spec"]["ports"]}
    assert port in {p["containerPort"] for p in pod["containers"][0]["ports"]}
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/app/work_dirs", "/dev/shm"} <= mounts


def _referenced_vars(args: list[str]) -> set[str]:
    return set(re.findall(r"\$\((\w+)\)", " ".join(args)))


def test_eval_job_runs_one_shard_per_index_and_merge_reads_them_all():
    objs = _objects()
    job = objs[("Job", "vla-eval")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    c = _pod_spec(job)["containers"][0]
    env = _env(c)
    # Kubernetes leaves an undefined $(VAR) in args as literal text: every one must be defined.
    assert _referenced_vars(c["args"]) <= set(env)
    assert int(env["NUM_SHARDS"]["value"]) == spec["completions"]
    assert env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"].endswith("['batch.kubernetes.io/job-completion-index']")
    args = c["args"]
    assert args[args.index("--shard") + 1] == "$(SHARD_INDEX)/$(NUM_SHARDS)"
    assert args[args.index("--server") + 1] == f"grpc://vla-policy-server:{protocol.GRPC_PORT}"
    out_pattern = args[args.index("--out") + 1]
    shard_dirs = [out_pattern.replace("$(SHARD_INDEX)", str(i)) for i in range(spec["completions"])]
    merge = _pod_spec(objs[("Job", "vla-eval-merge")])["containers"][0]["args"]
    positional = merge[:merge.index("--suite")] if "--suite" in merge else merge
    assert positional[0] == "merge" and positional[2:] == shard_dirs
    if "--suite" in merge:
        assert merge[merge.index("--suite") + 1] == env["SIM_SUITE"]["value"]
    assert all(d.startswith(positional[1] + "/") for d in shard_dirs), "shards live under the merged output"
    script = (K8S / "run_eval.sh").read_text()
    assert "eval/eval-job.yaml" in script and "eval/merge-job.yaml" in script


def test_everything_lives_in_one_namespace_with_the_shared_volume():
    objs = _objects()
    namespaces = {o["metadata"].get("namespace") for (kind, _), o in objs.items() if kind != "Namespace"}
    assert namespaces == {"vla"} and ("Namespace", "vla") in objs
    claims = {v["persistentVolumeClaim"]["claimName"] for (kind, _), o in objs.items() if kind in ("Deployment", "Job")
              for v in _pod_spec(o)["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"vla-work-dirs"} and ("PersistentVolumeClaim", "vla-work-dirs") in objs
    assert (REPO / "deploy/k8s/run_eval.sh").stat().st_mode & 0o111
