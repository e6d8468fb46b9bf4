"""Static checks of the deployment files: docker-compose.yml, the Dockerfile, Prometheus and Grafana
config, and the Kubernetes manifests in deploy/k8s. No docker engine or cluster is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from deploy.servers import start_nats
from shared.limits import NATS_MAX_PAYLOAD
from shared.messages import (
    MAX_AMOUNT,
    PartialInfo,
    RiskFactor,
    ScoreReply,
    ScoreRequest,
    Transaction,
    TransactionScore,
)
from shared.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
PROMETHEUS_FILE = ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "compose" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "fraudmesh.json"
LOCK_FILE = ROOT / "requirements.lock"
NATS_CONF = ROOT / "deploy" / "compose" / "nats" / "nats-server.conf"

# The four services: python module -> does it serve HTTP (gateway) or only a metrics port.
MODULES = {"gateway": "http", "aggregator": "metrics", "inference_svc": "metrics", "feature_svc": "metrics"}

# Every series the Grafana dashboard may use (issue 5); histograms without their _bucket/_count/_sum suffix.
DASHBOARD_METRICS = {
    "fraudmesh_http_request_duration_seconds",
    "fraudmesh_http_requests_total",
    "fraudmesh_partials_in_flight",
    "fraudmesh_partial_redeliveries_total",
    "fraudmesh_dead_lettered_total",
    "fraudmesh_feature_age_seconds",
    "fraudmesh_inference_feature_reads_total",
    "fraudmesh_model_score",
    "fraudmesh_nats_reconnects_total",
}

KNOWN_SETTINGS = {PREFIX + f.name.upper() for f in msgspec.structs.fields(Settings)}


def check_env_names(names: list[str] | set[str], where: str) -> None:
    """The services refuse to start on an unknown FRAUDMESH_* variable: catch that here."""
    unknown = sorted(n for n in names if n.startswith(PREFIX) and n not in KNOWN_SETTINGS)
    assert not unknown, f"{where}: unknown setting(s) {unknown}; known ones are in shared/settings.py"


# ------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_app_services(compose: dict[str, Any]) -> dict[str, str]:
    """compose service name -> python module, for services whose command is `python -m <one of MODULES>`."""
    found = {}
    for name, svc in compose["services"].items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = cmd.split()
        if len(cmd) >= 3 and cmd[:2] == ["python", "-m"] and cmd[2] in MODULES:
            found[name] = cmd[2]
    return found


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def test_docker_compose_config_validates() -> None:
    """`docker-compose config` (Debian's compose v1) parses, interpolates and schema-checks the file."""
    if shutil.which("docker-compose"):
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"]
    elif (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"]
    else:
        pytest.skip(
            "cannot validate docker-compose.yml: the `docker-compose` binary (Debian package docker-compose, "
            "compose v1) is not installed, and neither the compose v2 plugin (`docker compose`) nor a docker "
            "engine is on this machine. Install one with `apt-get install docker-compose`."
        )
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"


def test_compose_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for store in ("nats", "redis", "postgres", "neo4j", "jaeger", "prometheus", "grafana"):
        assert store in services, f"docker-compose.yml has no `{store}` service"
    assert services["nats"]["command"] == ["-c", "/etc/nats/nats-server.conf"]
    assert f"./{NATS_CONF.relative_to(ROOT)}:/etc/nats/nats-server.conf:ro" in services["nats"]["volumes"]
    assert "jetstream" in NATS_CONF.read_text(), "nats must run with JetStream"
    assert any(v.split(":")[-1] == "/data" for v in services["nats"].get("volumes", [])), "nats needs a volume"

    apps = compose_app_services(compose)
    assert sorted(apps.values()) == sorted(MODULES), f"expected one compose service per module, got {apps}"
    by_module = {m: n for n, m in apps.items()}
    assert services[by_module["inference_svc"]]["deploy"]["replicas"] == 2
    assert services[by_module["feature_svc"]]["deploy"]["replicas"] == 2

    for name in apps:
        svc = services[name]
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict) and deps.get("nats", {}).get("condition") == "service_healthy", (
            f"{name}: must wait for a healthy nats"
        )
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits on {dep}'s healthcheck"

    # The bootstrap model (built into the image) is installed before inference starts, into the volume it reads.
    init = services["model-init"]
    assert init["command"][:2] == ["python", "/opt/fraudmesh/install_bootstrap_model.py"]
    inference = services[by_module["inference_svc"]]
    assert inference["depends_on"]["model-init"]["condition"] == "service_completed_successfully"
    models_mount = [v for v in inference["volumes"] if v.split(":")[1] == "/app/var/models"]
    assert models_mount and models_mount[0].split(":")[0] in {v.split(":")[0] for v in init["volumes"]}

    gateway_env = compose_env(services[by_module["gateway"]])
    assert gateway_env.get("FRAUDMESH_HTTP_HOST") == "0.0.0.0", "the gateway must bind 0.0.0.0 in a container"


def test_compose_env_names_are_known_settings(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check_env_names(set(compose_env(svc)), f"docker-compose.yml service {name}")


def test_dockerfile_multistage_nonroot_without_torch() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    final_image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), stages[-1][0])
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", final_image), f"runtime stage is {final_image}"
    final_stage = text[text.rfind("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final_stage, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the runtime stage must run as non-root"
    installs = re.findall(r"pip install[^\n]*", text)
    assert "[" not in " ".join(installs) and "torch" not in " ".join(installs), f"no extras / torch: {installs}"
    for line in installs:  # every version comes from the lock
        assert "--no-deps" in line or "-c requirements.lock" in line, f"pip install without the lock: {line}"
    # The model-building tools stay in their own stage: the runtime copies only the model out of it.
    assert "bootstrap-model" in [name for _, name in stages], "no bootstrap-model stage"
    assert "COPY --from=bootstrap-model /opt/bootstrap-models" in final_stage
    env_names = re.findall(r"\b(FRAUDMESH_\w+)=", text)
    check_env_names(env_names, "Dockerfile")


# ------------------------------------------------------------------------------------- observability


def test_prometheus_scrapes_every_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "SRV") == "A", "compose DNS has A records only"
            targets.update((name, int(sd["port"])) for name in sd["names"])
        for static in job.get("static_configs", []):
            for t in static["targets"]:
                host, port = t.rsplit(":", 1)
                targets.add((host, int(port)))

    for name, module in compose_app_services(compose).items():
        env = compose_env(compose["services"][name])
        if MODULES[module] == "http":
            port = int(env.get("FRAUDMESH_HTTP_PORT", 8000))
        else:
            port = int(env.get("FRAUDMESH_METRICS_PORT", 0))
            assert port > 0, f"{name}: FRAUDMESH_METRICS_PORT must be set (0 disables metrics)"
        assert (name, port) in targets, f"prometheus does not scrape {name}:{port}; it scrapes {sorted(targets)}"

    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(m.startswith("./deploy/compose/prometheus/prometheus.yml:") for m in mounts)


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.extend(p.get("panels", []) if p.get("type") == "row" else [p])
    return out


def test_grafana_dashboard_uses_known_metrics() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = _panels(dashboard)
    assert panels, "the dashboard has no panels"
    datasource_uids = {
        ds["uid"]
        for f in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")
        for ds in yaml.safe_load(f.read_text())["datasources"]
    }
    used: set[str] = set()
    for panel in panels:
        title = panel.get("title", panel.get("id"))
        exprs = [t.get("expr", "") for t in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {title!r} has a target without a PromQL expr"
        assert panel["datasource"]["uid"] in datasource_uids, f"panel {title!r}: unknown datasource"
        for expr in exprs:
            names = {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"\bfraudmesh_\w+", expr)}
            assert names, f"panel {title!r}: expr names no fraudmesh metric: {expr}"
            assert names <= DASHBOARD_METRICS, f"panel {title!r}: unknown metric(s) {names - DASHBOARD_METRICS}"
            used |= names
    assert used == DASHBOARD_METRICS, f"dashboard misses {DASHBOARD_METRICS - used}"


def test_grafana_provisioning_matches_compose_mounts(compose: dict[str, Any]) -> None:
    mounts = dict(m.split(":")[:2] for m in compose["services"]["grafana"]["volumes"] if m.startswith("./"))
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "fraudmesh.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts.get("./deploy/compose/grafana/dashboards") == path
    assert mounts.get("./deploy/compose/grafana/provisioning") == "/etc/grafana/provisioning"


# ----------------------------------------------------------------------------------------- kubernetes


def load_k8s() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every Kubernetes object in deploy/k8s (multi-document YAML)."""
    objects = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                objects.append((path.name, doc))
    return objects


@pytest.fixture(scope="module")
def k8s() -> list[tuple[str, dict[str, Any]]]:
    objs = load_k8s()
    assert objs, "no Kubernetes objects in deploy/k8s"
    return objs


def of_kind(objs: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [o for _, o in objs if o["kind"] == kind]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_k8s_every_object_is_namespaced_and_named(k8s: list[tuple[str, dict[str, Any]]]) -> None:
    for fname, obj in k8s:
        assert obj.get("apiVersion") and obj.get("metadata", {}).get("name"), f"{fname}: incomplete object"
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "fraudmesh", f"{fname}: {obj['kind']} not in fraudmesh"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    manifests = {p.name for p in K8S_DIR.glob("*.yaml") if not p.name.endswith(".example.yaml")}
    manifests -= {"kustomization.yaml", "nats-values.yaml"}
    assert listed == manifests, (
        f"kustomization.yaml resources differ: missing {manifests - listed}, extra {listed - manifests}"
    )


def test_k8s_deployments_have_probes_resources_and_services(k8s: list[tuple[str, dict[str, Any]]]) -> None:
    deployments = of_kind(k8s, "Deployment")
    modules = {}
    services = of_kind(k8s, "Service")
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert matches(dep["spec"]["selector"]["matchLabels"], labels), f"{name}: selector misses its pods"
        spec = pod["spec"]
        pod_sc = spec.get("securityContext", {})
        assert spec.get("enableServiceLinks") is False, f"{name}: service-link env vars could break settings"
        for c in spec["containers"]:
            where = f"Deployment {name} container {c['name']}"
            for kind in ("requests", "limits"):
                res = c.get("resources", {}).get(kind, {})
                assert "cpu" in res and "memory" in res, f"{where}: resources.{kind} needs cpu and memory"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: not runAsNonRoot"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            # `command` would replace the image's tini entrypoint.
            assert "command" not in c, f"{where}: use args, not command"
            args = c["args"]
            assert args[:2] == ["python", "-m"] and args[2] in MODULES, f"{where}: args {args}"
            modules[args[2]] = dep
            ports = {p["containerPort"] for p in c.get("ports", [])} | {p.get("name") for p in c.get("ports", [])}
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            check_env_names(set(env), where)
            if MODULES[args[2]] == "http":
                expected = {"readinessProbe": "/ready", "livenessProbe": "/healthz"}
                serve_port = int(env.get("FRAUDMESH_HTTP_PORT", 8000))
                assert env.get("FRAUDMESH_HTTP_HOST") == "0.0.0.0", f"{where}: must bind 0.0.0.0"
            else:
                expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
                serve_port = int(env.get("FRAUDMESH_METRICS_PORT", 0))
                assert serve_port > 0, f"{where}: FRAUDMESH_METRICS_PORT must be set"
            assert serve_port in ports, f"{where}: serves on {serve_port} but declares ports {ports}"
            named = {p["name"]: p["containerPort"] for p in c["ports"] if "name" in p}
            for probe, path in expected.items():
                get = c.get(probe, {}).get("httpGet")
                assert get, f"{where}: no httpGet {probe}"
                assert get["path"] == path, f"{where}: {probe} path {get['path']}, expected {path}"
                assert named.get(get["port"], get["port"]) == serve_port, f"{where}: {probe} on wrong port"

        svc = [s for s in services if matches(s["spec"].get("selector", {}), labels)]
        assert svc, f"Deployment {name} has no Service selecting its pods"
        all_ports = {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        all_names = {p["name"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
        for s in svc:
            for p in s["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                assert target in all_ports or target in all_names, (
                    f"Service {s['metadata']['name']} targetPort {target} is not a port of Deployment {name}"
                )
    assert sorted(modules) == sorted(MODULES), f"expected one Deployment per module, got {sorted(modules)}"


def test_k8s_hpa_pdb_networkpolicy(k8s: list[tuple[str, dict[str, Any]]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(k8s, "Deployment")}
    by_module = {d["spec"]["template"]["spec"]["containers"][0]["args"][2]: d for d in deployments.values()}

    hpas = of_kind(k8s, "HorizontalPodAutoscaler")
    inference = by_module["inference_svc"]["metadata"]["name"]
    hpa = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == inference]
    assert hpa, f"no HPA targets the inference Deployment {inference!r}"
    h = hpa[0]
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in h["spec"]["metrics"])
    assert h["spec"]["minReplicas"] >= 2

    pdbs = of_kind(k8s, "PodDisruptionBudget")
    for module in ("gateway", "inference_svc"):
        labels = by_module[module]["spec"]["template"]["metadata"]["labels"]
        assert any(matches(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs), f"no PDB for {module}"

    policies = of_kind(k8s, "NetworkPolicy")
    gw_labels = by_module["gateway"]["spec"]["template"]["metadata"]["labels"]
    gw = [p for p in policies if matches(p["spec"]["podSelector"].get("matchLabels", {}), gw_labels)]
    assert gw and any(
        "from" not in rule and any(port["port"] == 8000 for port in rule["ports"]) for rule in gw[0]["spec"]["ingress"]
    ), "the gateway must accept port 8000 from anywhere"
    workers = {d["metadata"]["name"] for m, d in by_module.items() if m != "gateway"}
    covered = set()
    for p in policies:
        for expr in p["spec"]["podSelector"].get("matchExpressions", []):
            if expr["key"] == "app.kubernetes.io/name" and expr["operator"] == "In":
                covered |= set(expr["values"])
                for rule in p["spec"]["ingress"]:
                    assert rule.get("from"), "worker ingress must be restricted to known sources"
    assert workers <= covered, f"no NetworkPolicy for {workers - covered}"


def test_k8s_config_and_secret_hold_only_known_settings(k8s: list[tuple[str, dict[str, Any]]]) -> None:
    for cm in of_kind(k8s, "ConfigMap"):
        check_env_names(set(cm["data"]), f"ConfigMap {cm['metadata']['name']}")
        assert not {"FRAUDMESH_API_KEYS", "FRAUDMESH_NEO4J_PASSWORD", "FRAUDMESH_POSTGRES_DSN"} & set(cm["data"]), (
            "secrets belong in the Secret, not the ConfigMap"
        )
    secrets = of_kind(k8s, "Secret")
    assert secrets
    for s in secrets:
        check_env_names(set(s.get("stringData", {})) | set(s.get("data", {})), f"Secret {s['metadata']['name']}")
    # Every secretKeyRef points at a key that exists.
    keys = {(s["metadata"]["name"], k) for s in secrets for k in {**s.get("data", {}), **s.get("stringData", {})}}
    for dep in of_kind(k8s, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in keys, f"{dep['metadata']['name']}: missing secret {ref}"


def test_nats_helm_values_jetstream_cluster() -> None:
    values = yaml.safe_load((K8S_DIR / "nats-values.yaml").read_text())
    cfg = values["config"]
    assert cfg["cluster"]["enabled"] is True
    assert cfg["cluster"]["replicas"] == 3
    js = cfg["jetstream"]
    assert js["enabled"] is True
    assert js["fileStore"].get("enabled", True) is True
    assert js["fileStore"]["pvc"]["size"], "JetStream file storage needs a PVC size"


def test_k8s_placeholder_secret_is_never_applied() -> None:
    """`kubectl apply -k deploy/k8s` must not create or overwrite fraudmesh-secrets with placeholders."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    for listed in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / listed).read_text()):
            assert not doc or doc.get("kind") != "Secret", f"kustomization.yaml applies the Secret in {listed}"
    assert not kustomization.get("secretGenerator"), "kustomization.yaml generates a Secret"
    template = (K8S_DIR / "secret.example.yaml").read_text()
    assert "kubectl -n fraudmesh create secret generic fraudmesh-secrets" in template
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "create secret generic fraudmesh-secrets" in readme, "deploy/README.md must say how to create the Secret"


def test_k8s_streams_are_replicated_three_times() -> None:
    cm = next(o for _, o in load_k8s() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "fraudmesh-config")
    replicas = int(cm["data"]["FRAUDMESH_STREAM_REPLICAS"])
    values = yaml.safe_load((K8S_DIR / "nats-values.yaml").read_text())
    assert replicas == 3 <= values["config"]["cluster"]["replicas"]


# ------------------------------------------------------------------------------------------- NATS limits


def test_nats_max_payload_is_one_number_everywhere(tmp_path: Path) -> None:
    """compose, the Helm values and `fraudmesh up` (deploy/servers.py) all use shared.limits.NATS_MAX_PAYLOAD."""
    conf = dict(re.findall(r"^\s*(\w+)\s*:\s*(\S+)\s*$", NATS_CONF.read_text(), re.M))
    assert int(conf["max_payload"]) == NATS_MAX_PAYLOAD, f"{NATS_CONF}: max_payload {conf['max_payload']}"
    values = yaml.safe_load((K8S_DIR / "nats-values.yaml").read_text())
    assert values["config"]["merge"]["max_payload"] == NATS_MAX_PAYLOAD, "nats-values.yaml: config.merge.max_payload"
    # `fraudmesh up` and the test suite: ask the running server what it enforces.
    server = start_nats(tmp_path)
    try:
        varz = httpx.get(f"http://127.0.0.1:{server.extra['monitor']}/varz", timeout=5).json()
    finally:
        server.stop()
    assert varz["max_payload"] == NATS_MAX_PAYLOAD


def _longest(n: int, prefix: str) -> str:
    return (f"{prefix}{n}-" + "x" * 128)[:128]


def test_largest_request_and_reply_fit_in_max_payload() -> None:
    """A 10,000-transaction request and its reply, every field at its longest, fit in one NATS message."""
    settings = Settings()
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    txs = [
        Transaction(
            card_id=_longest(i, "c"),
            transaction_amount=MAX_AMOUNT,
            merchant_id=_longest(i, "m"),
            mcc_code="5411",
            country_code="US",
            transaction_id=_longest(i, "t"),
            timestamp=ts,
            device_id=_longest(i, "d"),
            ip_address="ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            currency="USD",
            channel="ecom",
        )
        for i in range(settings.max_batch_size)
    ]
    request = ScoreRequest(transactions=txs, request_id=_longest(0, "r"), partial_size=settings.max_batch_size)
    factor = RiskFactor(code="x" * 40, description="y" * 120, weight=-123.4567, source="features")
    score = TransactionScore(
        transaction_id=_longest(0, "t"),
        fraud_score=0.123456789,
        risk_level="critical",
        recommended_action="decline",
        confidence=0.987654321,
        model_version=_longest(0, "v")[:64],
        top_risk_factors=[factor] * 3,  # inference_svc.reasons explains with k=3
        features_used=1000,
        feature_freshness_sec=86400.123,
        features_computed=1000,
    )
    reply = ScoreReply(
        request_id=_longest(0, "r"),
        complete=False,
        results=[score] * settings.max_batch_size,
        partials=[PartialInfo(index=i, size=1, worker_id="w" * 64) for i in range(200)],
        missing_transaction_ids=[_longest(i, "t") for i in range(1000)],
        timings_ms={f"stage_{i}": 1.0 for i in range(20)},
    )
    for name, msg in (("request", request), ("reply", reply)):
        size = len(msgspec.msgpack.encode(msg))
        assert size <= NATS_MAX_PAYLOAD * 0.8, f"largest {name} is {size} bytes: NATS_MAX_PAYLOAD leaves <20% headroom"


# ----------------------------------------------------------------------------------------------- images


def _compose_images() -> dict[str, str]:
    return {n: s["image"] for n, s in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items() if "image" in s}


def test_third_party_images_are_pinned_to_exact_versions() -> None:
    images = {f"compose {n}": i for n, i in _compose_images().items() if not i.startswith("fraudmesh:")}
    values = yaml.safe_load((K8S_DIR / "nats-values.yaml").read_text())
    images["helm nats"] = f"{values['container']['image']['repository']}:{values['container']['image']['tag']}"
    text = DOCKERFILE.read_text()
    images["Dockerfile PYTHON_IMAGE"] = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    for where, image in images.items():
        tag = image.rsplit(":", 1)[-1] if ":" in image else "latest"
        # PostgreSQL's releases have two parts since 10 (16.4); everything else has three.
        exact = r"\d+\.\d+" if image.startswith("postgres:") else r"v?\d+\.\d+\.\d+"
        assert re.match(exact + r"(-[a-z0-9.-]+)?$", tag), f"{where}: {image} is not pinned to an exact version"
    assert {"nats", "redis", "postgres", "neo4j", "jaeger", "prometheus", "grafana"} <= {n.split()[-1] for n in images}


# ---------------------------------------------------------------------------------------------- lock file


def _requirements(project: dict[str, Any]) -> list[Requirement]:
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith(project["name"] + "[")]
    return reqs


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"requirements.lock: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def test_lock_satisfies_pyproject() -> None:
    """requirements.lock pins every dependency and extra of pyproject.toml to a version its specifier allows.

    Regenerate it after changing dependencies with the command at the top of requirements.lock."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _lock()
    for req in _requirements(project):
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock has no pin for {req}: regenerate it (see its first lines)"
        pinned = pins[name]
        assert req.specifier.contains(pinned, prereleases=True), f"requirements.lock pins {name}=={pinned}, {req}"
    # torch stays the CPU wheel's version (any other one downloads GBs of CUDA), and only in `train`.
    assert pins["torch"] == Version("2.13.0")
    assert not any(canonicalize_name(Requirement(r).name) == "torch" for r in project["dependencies"])
    # model-building tools and the Neo4j driver are extras, not serving dependencies.
    serving = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert not serving & {"scikit-learn", "skl2onnx", "onnx", "neo4j", "torch"}, serving


def test_install_commands_use_the_lock() -> None:
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    assert "-c requirements.lock" in lib, "scripts/lib.sh ensure_venv must install with the lock as constraints"
    for script, extras in (("run.sh", {"bootstrap"}), ("test.sh", {"dev", "train", "bootstrap", "neo4j"})):
        text = (ROOT / "scripts" / script).read_text()
        calls = re.findall(r"^\s*ensure_venv\s+(\S*)", text, re.M)
        assert calls, f"scripts/{script} does not call ensure_venv"
        for found in calls:  # every branch (run.sh: with or without the GNN's train extra)
            assert extras <= set(found.split(",")), f"scripts/{script} must install the extras {extras}"


# ----------------------------------------------------------------------------- Prometheus Operator objects

MONITORING_DIR = K8S_DIR / "monitoring"
RULES_DIR = ROOT / "deploy" / "prometheus"


def test_servicemonitor_scrapes_every_service_port(k8s: list[tuple[str, dict[str, Any]]]) -> None:
    kustomization = yaml.safe_load((MONITORING_DIR / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in MONITORING_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    monitor = yaml.safe_load((MONITORING_DIR / "servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor" and monitor["metadata"]["namespace"] == "fraudmesh"
    endpoints = {e["port"]: e.get("path", "/metrics") for e in monitor["spec"]["endpoints"]}
    for svc in of_kind(k8s, "Service"):
        name = svc["metadata"]["name"]
        assert matches(monitor["spec"]["selector"]["matchLabels"], svc["metadata"].get("labels", {})), (
            f"the ServiceMonitor does not select Service {name}"
        )
        scraped = [p for p in svc["spec"]["ports"] if p.get("name") in endpoints]
        assert scraped, f"the ServiceMonitor scrapes no port of Service {name}"
        assert all(endpoints[p["name"]] == "/metrics" for p in scraped)


def test_prometheusrule_holds_every_rules_file() -> None:
    """Alert rules are written once: every group of every rules file in deploy/prometheus/ is in the
    PrometheusRule unchanged (copy the group into deploy/k8s/monitoring/prometheusrule.yaml)."""
    rule = yaml.safe_load((MONITORING_DIR / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "fraudmesh"
    groups = {g["name"]: g for g in rule["spec"]["groups"]}
    assert groups and all(g["rules"] for g in groups.values())
    for g in groups.values():
        for r in g["rules"]:
            assert r.get("alert") or r.get("record"), f"group {g['name']}: a rule without a name"
            assert r["expr"].strip(), f"{r.get('alert')}: empty expr"
    for path in sorted(RULES_DIR.glob("*.y*ml")) if RULES_DIR.exists() else []:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            assert groups.get(group["name"]) == group, (
                f"group {group['name']!r} of {path.relative_to(ROOT)} is missing or different in prometheusrule.yaml"
            )


def test_k8s_model_init_job_installs_the_images_bootstrap_model(k8s: list[tuple[str, dict[str, Any]]]) -> None:
    """The image has no scikit-learn: the Job copies the model built into the image, like compose's model-init."""
    compose_init = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["model-init"]["command"]
    jobs = [j for j in of_kind(k8s, "Job") if j["metadata"]["name"] == "model-init"]
    assert jobs, "no model-init Job in deploy/k8s"
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == compose_init, f"Job args {container['args']} differ from compose {compose_init}"
    assert (ROOT / "deploy" / "compose" / "install_bootstrap_model.py").exists()
    assert "deploy/compose/install_bootstrap_model.py /opt/fraudmesh/" in DOCKERFILE.read_text()


def _run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    path = ROOT / "deploy" / "compose" / script
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_install_bootstrap_model_copies_once_and_never_overwrites(tmp_path: Path) -> None:
    """Each family's bootstrap model is copied into its directory once; a model activated since is left alone."""
    target, pers_target = tmp_path / "volume", tmp_path / "volume-personalization"
    sources = {}
    for family, version in (("fraud", "bootstrap-1"), ("personalization", "pers-bootstrap-1")):
        source = tmp_path / f"image-models-{family}"
        (source / version).mkdir(parents=True)
        (source / version / "model.onnx").write_bytes(f"onnx {family}".encode())
        (source / "active").write_text(f"{version}\n")
        sources[family] = str(source)

    def install(fraud_source: str) -> subprocess.CompletedProcess[str]:
        return _run_script(
            "install_bootstrap_model.py",
            *("--source", fraud_source, "--model-dir", str(target)),
            *("--personalization-source", sources["personalization"], "--personalization-dir", str(pers_target)),
            "--no-features",
        )

    missing = install(str(tmp_path / "nothing"))
    assert missing.returncode != 0 and "no bootstrap model" in missing.stderr

    first = install(sources["fraud"])
    assert first.returncode == 0, first.stderr
    assert (target / "active").read_text().strip() == "bootstrap-1"
    assert (target / "bootstrap-1" / "model.onnx").read_bytes() == b"onnx fraud"
    assert (pers_target / "active").read_text().strip() == "pers-bootstrap-1"
    assert (pers_target / "pers-bootstrap-1" / "model.onnx").read_bytes() == b"onnx personalization"

    (target / "active").write_text("published-2\n")  # a model activated since: left alone on a restart
    (pers_target / "active").write_text("pers-published-2\n")
    again = install(sources["fraud"])
    assert again.returncode == 0 and again.stdout.count("nothing to do") == 2, again.stdout
    assert (target / "active").read_text().strip() == "published-2"
    assert (pers_target / "active").read_text().strip() == "pers-published-2"


def test_install_bootstrap_model_loads_the_personalization_worlds_features(tmp_path: Path, redis_url: str) -> None:
    """model-init's last step: the features of the world the installed personalization model was trained on are in
    Redis, so the users it knows are scored from their features (as after `fraudmesh up`)."""
    from feature_svc.online import OnlineRead
    from feature_svc.world.personalization.features import (
        ITEM_FEATURES,
        USER_FEATURES,
        as_mapping,
        item_features,
        user_features,
    )
    from feature_svc.world.personalization.online import store
    from feature_svc.world.personalization.world import SECONDS_PER_DAY, generate, options_of
    from trainer.personalization.bootstrap import train_bootstrap

    fraud_source = tmp_path / "image-models"
    (fraud_source / "bootstrap-1").mkdir(parents=True)
    (fraud_source / "active").write_text("bootstrap-1\n")
    pers_source = tmp_path / "image-models-personalization"
    meta = train_bootstrap(pers_source)
    world = generate(options_of(meta))
    res = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "compose" / "install_bootstrap_model.py"),
         *("--source", str(fraud_source), "--model-dir", str(tmp_path / "m")),
         *("--personalization-source", str(pers_source), "--personalization-dir", str(tmp_path / "mp"))],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "FRAUDMESH_REDIS_URL": redis_url},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = world.n_users + world.n_items + world.n_sessions
    assert f"wrote {rows} personalization feature rows" in res.stdout

    async def read_back() -> list[OnlineRead]:
        online = store(redis_url, 600)
        try:
            return await online.read([("user", world.user_id(0)), ("item", world.item_id(0))])
        finally:
            await online.close()

    user, item = asyncio.run(read_back())
    cutoff = world.options.days * SECONDS_PER_DAY + 1.0
    assert user.present and not user.stale and item.present and not item.stale
    assert user.values == pytest.approx(as_mapping(USER_FEATURES, user_features(world, cutoff)[0]))
    assert item.values == pytest.approx(as_mapping(ITEM_FEATURES, item_features(world, cutoff)[0]))


def test_deps_of_prints_serving_deps_and_expands_extras(tmp_path: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serving = _run_script("deps_of.py", "").stdout.splitlines()
    assert serving == project["dependencies"]
    train = _run_script("deps_of.py", "train", "--extras-only").stdout.splitlines()
    assert set(project["optional-dependencies"]["bootstrap"]) <= set(train), "fraudmesh[bootstrap] is expanded"
    assert not any(r.startswith("fraudmesh") for r in train)
    bad = _run_script("deps_of.py", "nosuch")
    assert bad.returncode != 0 and "unknown extra 'nosuch'" in bad.stderr
