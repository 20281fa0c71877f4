"""deploy/: the Dockerfile, compose file and Kubernetes manifests hold together.

The pieces are parsed and checked against each other: ports, probe paths, the policy mount, the
environment the policy's virtual key needs, the Prometheus targets. The image is built and run
by tests/deploy/test_image.py; compose's whole topology runs as processes in
tests/e2e/test_fleet_deploy.py (no registry is reachable for the Redis, Prometheus and Grafana
images compose names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from seatbelt.config.policy import load_policy, policy_from_text
from tests.deploy.test_rules import promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent
METRICS_PORT = 9464


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in docs(f):
            found[(d["kind"], d["metadata"]["name"])] = d
    return found


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def proxies(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in c["services"].items() if n.startswith("seatbelt-")}


def test_dockerfile_runs_non_root_with_a_readyz_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert user not in ("0", "root")
    health = re.search(r"^HEALTHCHECK .*?CMD (.+)$", text, re.M | re.S)
    assert health and "'http://127.0.0.1:{port}/readyz'" in health.group(1)
    assert "os.environ['SEATBELT_METRICS']" in health.group(1), "probe the port metrics serve"
    assert re.search(rf"SEATBELT_METRICS=0\.0\.0\.0:{METRICS_PORT}\b", text)
    assert re.search(r"SEATBELT_LISTEN=0\.0\.0\.0:8080\b", text)
    assert re.search(rf"^EXPOSE 8080 {METRICS_PORT}$", text, re.M)
    # what compose and k8s set, and the metrics address the healthcheck follows
    for var in ("SEATBELT_POLICY", "SEATBELT_LEDGER", "SEATBELT_METRICS"):
        assert f'seatbelt_{var[9:].lower()}=\\"${var}\\"' in text, var
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"


def test_compose_fleet_shares_redis_with_aof_and_mounts_what_exists() -> None:
    c = compose()
    fleet = proxies(c)
    assert len(fleet) >= 2
    for name, svc in fleet.items():
        env = svc["environment"]
        assert env["SEATBELT_LEDGER"].startswith("redis://redis:"), name
        (mount,) = [v for v in svc["volumes"] if v.endswith(":ro")]
        src, dst, _ = mount.split(":")
        assert dst == env["SEATBELT_POLICY"] and (DEPLOY / src).is_file()
        assert "OPENAI_API_KEY" in env, "the policy's virtual key needs its real credential"
    assert len({svc["ports"][0].split(":")[0] for svc in fleet.values()}) == len(fleet)
    redis = " ".join(c["services"]["redis"]["command"])
    assert "--appendonly yes" in redis
    for svc in ("prometheus", "grafana"):
        for v in c["services"][svc]["volumes"]:
            assert (DEPLOY / v.split(":")[0]).exists(), f"{svc} mounts missing {v}"


def test_compose_prometheus_scrapes_every_proxy_and_loads_the_rules() -> None:
    c = compose()
    prom = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "seatbelt"
    targets = {t for s in job["static_configs"] for t in s["targets"]}
    assert targets == {f"{n}:{METRICS_PORT}" for n in proxies(c)}
    mounted = {v.split(":")[1] for v in c["services"]["prometheus"]["volumes"]}
    assert {f"/etc/prometheus/{r}" for r in prom["rule_files"]} <= mounted
    out = promtool("check", "config", "compose.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_grafana_provisions_the_dashboard() -> None:
    c = compose()
    mounts = dict(v.split(":")[:2] for v in c["services"]["grafana"]["volumes"])
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/seatbelt.yml").read_text())
    (p,) = provider["providers"]
    assert str(Path(mounts["./grafana/seatbelt.json"]).parent) == p["options"]["path"]
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_policy_and_configmap_are_the_same_valid_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")
    fleet = load_policy(str(DEPLOY / "policy.yaml"))
    cm = k8s()[("ConfigMap", "seatbelt-policy")]["data"]["policy.yaml"]
    assert yaml.safe_load(cm) == yaml.safe_load((DEPLOY / "policy.yaml").read_text())
    assert policy_from_text("configmap", cm).keys == fleet.keys


def test_k8s_deployment_probes_service_configmap_and_secret_fit() -> None:
    objs = k8s()
    dep = objs[("Deployment", "seatbelt")]
    svc = objs[("Service", "seatbelt")]
    secret = objs[("Secret", "seatbelt-upstream")]
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"proxy": 8080, "metrics": METRICS_PORT}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports.keys()
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert str(Path(env["SEATBELT_POLICY"]).parent) == mounts["policy"]
    assert volumes["policy"]["configMap"]["name"] == "seatbelt-policy"
    assert Path(env["SEATBELT_POLICY"]).name in objs[("ConfigMap", "seatbelt-policy")]["data"]
    (ref,) = c["envFrom"]
    assert ref["secretRef"]["name"] == secret["metadata"]["name"]
    cm = yaml.safe_load(objs[("ConfigMap", "seatbelt-policy")]["data"]["policy.yaml"])
    needed = {k["upstream_credential_env"] for k in cm["keys"] if "upstream_credential_env" in k}
    assert needed <= secret["stringData"].keys()
    ledger = secret["stringData"]["SEATBELT_LEDGER"]
    redis_port = objs[("Service", "redis")]["spec"]["ports"][0]["port"]
    assert ledger.startswith(f"redis://redis:{redis_port}/")
    redis = objs[("Deployment", "redis")]["spec"]["template"]["spec"]["containers"][0]
    assert " ".join(redis["args"]).startswith("--appendonly yes")
