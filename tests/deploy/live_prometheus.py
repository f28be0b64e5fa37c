"""A real Prometheus process on loopback, configured from the shipped deploy/prometheus/prometheus.yml
with only its targets and intervals changed: shared by test_live_prometheus (a local server) and
stack_probe (the policy-server container of `make images-test`)."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.conftest import stop_process
from tests.deploy.conftest import DEPLOY, run


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def wait_for(what: str, check, timeout: float = 30.0, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Prom:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict]:
        body = json.loads(get(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def api(self, path: str) -> dict:
        body = json.loads(get(f"{self.base}/api/v1/{path}"))
        assert body["status"] == "success", body
        return body["data"]


def start_prometheus(prometheus_bin: str, promtool: str, workdir: Path, server_target: str,
                     prom_port: int) -> subprocess.Popen:
    """Prometheus scraping `server_target` (host:port) every second with the shipped rules; the config
    is checked with promtool first. Its TSDB lives in `workdir`."""
    cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(DEPLOY / "prometheus" / pattern) for pattern in cfg["rule_files"]]
    targets = {"policy-server": server_target, "prometheus": f"127.0.0.1:{prom_port}"}
    for job in cfg["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    cfg_path = workdir / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    checked = run([promtool, "check", "config", str(cfg_path)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prom = subprocess.Popen(
        [prometheus_bin, f"--config.file={cfg_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("prometheus /-/ready", lambda: get(f"http://127.0.0.1:{prom_port}/-/ready") is not None)
    except BaseException:
        stop_process(prom)
        raise
    return prom
