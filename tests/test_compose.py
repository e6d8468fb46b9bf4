"""docker compose for real: build the image from the project's Dockerfile, start the stack, score through it.

Where no image registry is reachable (CI here), every image is built from one local Debian base made with
debootstrap: fraudmesh from the project's own Dockerfile, and stand-ins for nats, redis, postgres and
prometheus (deploy/compose/local-images.yml, the only difference from what users run). Neo4j, Jaeger and
Grafana have no stand-in and are left out (the services use PostgreSQL as the graph store by default and
keep running when the trace exporter cannot connect).

Runs where a docker engine answers (as root, scripts/test.sh starts one); skips and says why elsewhere.
What it saw (timings, the scored batch, Prometheus targets, image size) goes to var/compose-test.json.
The base image is cached: the docker image itself, and its root file system as a tarball in
~/.cache/fraudmesh, so a new engine imports it in seconds instead of running debootstrap again (~45 s).

The last test needs no docker: it checks the dashboard's metric names against the local stack's /metrics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.servers import Server, free_port
from tests.stacks import Stack

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose" / "local-images.yml"]
DASHBOARD_FILE = ROOT / "deploy" / "compose" / "grafana" / "dashboards" / "fraudmesh.json"
RULES_FILE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
BASE_IMAGE = "fraudmesh-local/python:3.11-bookworm"
BASE_TARBALL = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fraudmesh" / "bookworm-python3.tar"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APP_IMAGE = f"fraudmesh:{os.environ.get('FRAUDMESH_IMAGE_TAG', 'local')}"  # docker-compose.yml's image name
REPORT_FILE = ROOT / "var" / "compose-test.json"
# What the test starts: every service of docker-compose.yml except those with no image to be had here.
STARTED = ["nats", "redis", "postgres", "prometheus", "model-init", "feature", "inference", "aggregator", "gateway"]
LEFT_OUT = {
    "neo4j": "no Neo4j image or Debian package is reachable here (FRAUDMESH_GRAPH_STORE defaults to postgres)",
    "jaeger": "no Jaeger image is reachable here (traces are exported to nowhere and not checked)",
    "grafana": "no Grafana image is reachable here (the dashboard's metric names are checked against Prometheus)",
}
SCRAPED_JOBS = {"gateway", "aggregator", "inference", "feature", "prometheus"}


def run(cmd: list[str], timeout: float = 900, env: dict[str, str] | None = None, check: bool = True) -> str:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def why_no_docker() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH (as root, scripts/test.sh installs docker.io and starts the engine)"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        err = info.stderr.strip()[:200]
        return f"no docker engine answers `docker info` ({err}); as root, scripts/test.sh starts one"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)"
    if not BASE_TARBALL.exists() and not image_exists(BASE_IMAGE) and shutil.which("debootstrap") is None:
        return "debootstrap is needed once to make the local base image (apt-get install debootstrap)"
    return None


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def ensure_base_image(timings: dict[str, float]) -> None:
    """Debian bookworm with python3, the host's CA bundle and pip pointed at it, as BASE_IMAGE."""
    if image_exists(BASE_IMAGE):
        return
    t0 = time.monotonic()
    if not BASE_TARBALL.exists():
        BASE_TARBALL.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="fraudmesh-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
                 str(rootfs), "http://deb.debian.org/debian"], timeout=900)  # fmt: skip
            # pip inside the builds must trust what the host trusts (a proxy's CA, for one).
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
            (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")  # like the python:3.11 images
            for cache in ("var/cache/apt", "var/lib/apt/lists"):  # every image's build runs apt-get update
                shutil.rmtree(rootfs / cache, ignore_errors=True)
                (rootfs / cache / "partial").mkdir(parents=True)
            partial = BASE_TARBALL.with_suffix(".partial")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.replace(BASE_TARBALL)
        timings["debootstrap_s"] = round(time.monotonic() - t0, 1)
    changes = ["ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]
    index = os.environ.get("PIP_INDEX_URL") or pip_config("global.index-url")
    if index and not index.startswith("file:"):  # the host's index, if it has its own
        changes.append(f"ENV PIP_INDEX_URL={index}")
    args = [a for c in changes for a in ("--change", c)]
    run(["docker", "import", *args, str(BASE_TARBALL), BASE_IMAGE])
    timings["base_image_s"] = round(time.monotonic() - t0, 1)


def pip_config(key: str) -> str:
    res = subprocess.run(["python3", "-m", "pip", "config", "get", key], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


@dataclass
class ComposeStack:
    cmd: list[str]
    env: dict[str, str]
    gateway: str
    prometheus: str
    timings: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    """What the tests saw (scored batch, Prometheus targets, image size): written to REPORT_FILE."""

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        files = [a for f in COMPOSE_FILES for a in ("-f", str(f))]
        return run([*self.cmd, *files, *args], timeout=timeout, env=self.env, check=check)

    def containers(self) -> list[dict[str, Any]]:
        ids = self.compose("ps", "-q").split()
        return json.loads(run(["docker", "inspect", *ids])) if ids else []


def wait_healthy(stack: ComposeStack, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, str] = {}
    while time.monotonic() < deadline:
        state, services = {}, set()
        for c in stack.containers():
            service = c["Config"]["Labels"]["com.docker.compose.service"]
            health = (c["State"].get("Health") or {}).get("Status")
            state[c["Name"]] = health or c["State"]["Status"]
            services.add(service)
            if service == "model-init" and c["State"]["Status"] == "exited":
                assert c["State"]["ExitCode"] == 0, f"model-init failed:\n{stack.compose('logs', 'model-init')}"
                state.pop(c["Name"])
        if state and all(v == "healthy" for v in state.values()) and set(STARTED) - {"model-init"} <= services:
            return
        time.sleep(2)
    raise AssertionError(f"not healthy within {timeout:.0f}s: {state}\n{stack.compose('logs', '--tail=30')}")


@pytest.fixture(scope="module")
def compose_stack() -> Iterator[ComposeStack]:
    reason = why_no_docker()
    if reason:
        pytest.skip(f"docker compose stack not tested: {reason}")
    cmd = compose_command()
    assert cmd
    ports = {k: free_port() for k in ("GATEWAY_PORT", "PROMETHEUS_PORT", "NATS_PORT", "NATS_MONITOR_PORT")}
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"fraudmeshtest{os.getpid()}",
        "LOCAL_BASE_IMAGE": BASE_IMAGE,
        "DOCKER_BUILDKIT": "0",  # compose v1 builds through the engine's own builder
        **{k: str(v) for k, v in ports.items()},
    }
    stack = ComposeStack(
        cmd, env, f"http://127.0.0.1:{ports['GATEWAY_PORT']}", f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    )
    t0 = time.monotonic()
    ensure_base_image(stack.timings)
    t1 = time.monotonic()
    # One fraudmesh build serves all five app services (same image name).
    stack.compose("build", "model-init", "nats", "redis", "postgres", "prometheus", timeout=1500)
    t2 = time.monotonic()
    try:
        stack.compose("up", "-d", "--no-build", *STARTED, timeout=600)
        wait_healthy(stack)
        t3 = time.monotonic()
        stack.timings.update(base_s=round(t1 - t0, 1), build_s=round(t2 - t1, 1), up_healthy_s=round(t3 - t2, 1))
        print(f"\ncompose stack timings (s): {stack.timings}; left out: {sorted(LEFT_OUT)}")
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
        REPORT_FILE.write_text(json.dumps({"timings_s": stack.timings, **stack.report}, indent=2) + "\n")


def transactions(n: int, tag: str) -> list[dict[str, Any]]:
    """Entities named for this call only: the local stack shares Redis and PostgreSQL with other tests."""
    run = f"{tag}-{uuid.uuid4().hex[:8]}"
    return [
        {
            "transaction_id": f"{tag}-{i}",
            "card_id": f"{run}-card-{i % 997}",
            "merchant_id": f"{run}-merchant-{i % 89}",
            "device_id": f"{run}-device-{i % 501}",
            "transaction_amount": round(5 + (i * 37 % 2000) / 3, 2),
            "mcc_code": "5411",
            "country_code": "US",
            "currency": "USD",
            "channel": "ecom",
            "timestamp": f"2026-11-30T12:{i % 60:02d}:00Z",
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------- the stack


@pytest.mark.timeout(1800)
def test_compose_scores_10000_transactions_and_one(compose_stack: ComposeStack) -> None:
    batch = {"transactions": transactions(10_000, "batch")}
    r = httpx.post(f"{compose_stack.gateway}/predict", json=batch, timeout=120)
    assert r.status_code == 200, r.text[:2000]
    doc = r.json()
    assert len(doc["results"]) == 10_000 and all(doc["results"]), "every transaction must be scored"
    assert doc["results"][0]["transaction_id"] == "batch-0" and doc["results"][-1]["transaction_id"] == "batch-9999"
    compose_stack.report["batch"] = {
        "transactions": len(doc["results"]),
        "latency_ms": round(doc["latency_ms"]),
        "partials": len(doc["partials"]),
        "model_version": doc["results"][0]["model_version"],
    }
    print(f"\ncompose: {compose_stack.report['batch']}")
    one = httpx.post(f"{compose_stack.gateway}/score/fraud", json=transactions(1, "single")[0], timeout=30)
    assert one.status_code == 200, one.text
    assert 0.0 <= one.json()["fraud_score"] <= 1.0 and one.json()["transaction_id"] == "single-0"


@pytest.mark.timeout(300)
def test_compose_serves_the_personalization_bootstrap_model(compose_stack: ComposeStack) -> None:
    """model-init installed the personalization model built into the image and loaded its world's features: a user
    it knows is scored from their features by that version, an unknown one as a cold start (not a 503)."""
    probe = (
        "import json, pathlib; d = pathlib.Path('/opt/fraudmesh/bootstrap-models-personalization'); "
        "v = (d / 'active').read_text().strip(); ids = json.loads((d / v / 'ids.json').read_text()); "
        "print(json.dumps({'version': v, 'user': ids['users'][0], 'item': ids['items'][0]}))"
    )
    built = json.loads(run(["docker", "run", "--rm", "--network", "none", APP_IMAGE, "python", "-c", probe]).strip())
    assert built["version"].startswith("pers-bootstrap-"), built
    url = f"{compose_stack.gateway}/score/personalization"
    body = {"user_id": built["user"], "item_id": built["item"], "session_id": "s-compose"}
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == built["version"]
    assert 0.0 <= doc["relevance_score"] <= 1.0 and 0.0 < doc["conversion_probability"] < 1.0
    assert "cold_start_user" not in doc["behavioral_signals"] and doc["user_segment"] != "new_visitor", doc
    cold = httpx.post(url, json={"user_id": "user_nobody", "item_id": built["item"]}, timeout=30)
    assert cold.status_code == 200, cold.text
    assert "cold_start_user" in cold.json()["behavioral_signals"]
    compose_stack.report["personalization"] = {k: doc[k] for k in ("model_version", "user_segment")}


def prometheus_targets(stack: ComposeStack) -> list[dict[str, Any]]:
    doc = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()
    return list(doc["data"]["activeTargets"])


@pytest.mark.timeout(600)
def test_prometheus_scrapes_every_service(compose_stack: ComposeStack) -> None:
    deadline = time.monotonic() + 90
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        targets = prometheus_targets(compose_stack)
        jobs = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        if jobs >= SCRAPED_JOBS and all(t["health"] == "up" for t in targets):
            break
        time.sleep(3)
    found = sorted((t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets)
    compose_stack.report["prometheus_targets"] = found
    print(f"\nprometheus targets: {found}")
    assert {t["labels"]["job"] for t in targets} >= SCRAPED_JOBS, found
    assert all(t["health"] == "up" for t in targets), found


def metric_names_in(exprs: list[str]) -> set[str]:
    return {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"\bfraudmesh_\w+", e)}


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = [q for p in dashboard["panels"] for q in (p.get("panels", []) if p.get("type") == "row" else [p])]
    return metric_names_in([t.get("expr", "") for p in panels for t in p.get("targets", [])])


def rule_metrics() -> set[str]:
    rule = yaml.safe_load(RULES_FILE.read_text())
    return metric_names_in([r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]])


def missing_metrics(wanted: set[str], scraped: set[str]) -> set[str]:
    """Names (histograms without suffix) with no scraped series of that name or name + _bucket/_total."""
    suffixes = ("", "_bucket", "_total", "_count")
    return {m for m in wanted if not any(m + s in scraped or m.removesuffix("_total") + s in scraped for s in suffixes)}


@pytest.mark.timeout(600)
def test_dashboard_and_alerts_use_metrics_prometheus_really_scrapes(compose_stack: ComposeStack) -> None:
    httpx.post(f"{compose_stack.gateway}/predict", json={"transactions": transactions(50, "warm")}, timeout=60)
    deadline = time.monotonic() + 60
    missing: set[str] = set()
    wanted = dashboard_metrics() | rule_metrics()
    while time.monotonic() < deadline:
        doc = httpx.get(f"{compose_stack.prometheus}/api/v1/label/__name__/values", timeout=10).json()
        missing = missing_metrics(wanted, set(doc["data"]))
        if not missing:
            return
        time.sleep(5)
    raise AssertionError(f"the dashboard / alert rules name metrics that no service exports: {sorted(missing)}")


@pytest.mark.timeout(300)
def test_image_runs_as_non_root_without_torch_or_build_tools(compose_stack: ComposeStack) -> None:
    probe = (
        "import importlib.util as u, os, json; "
        "print(json.dumps({'uid': os.getuid(), 'absent': [m for m in ('torch', 'sklearn', 'skl2onnx', 'onnx', "
        "'neo4j') if u.find_spec(m) is None], 'onnxruntime': u.find_spec('onnxruntime') is not None}))"
    )
    out = run(["docker", "run", "--rm", "--network", "none", APP_IMAGE, "python", "-c", probe])
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["uid"] == 10001, doc
    assert doc["absent"] == ["torch", "sklearn", "skl2onnx", "onnx", "neo4j"], doc
    assert doc["onnxruntime"], doc
    size = int(run(["docker", "image", "inspect", "--format", "{{.Size}}", APP_IMAGE]).strip())
    compose_stack.report["image_mb"] = round(size / 1e6)
    compose_stack.report["not_started"] = LEFT_OUT
    print(f"\nimage {APP_IMAGE}: {size / 1e6:.0f} MB")
    for name, why in LEFT_OUT.items():
        print(f"not started: {name}: {why}")


# -------------------------------------------------------------------------------- local stack, no docker


@pytest.fixture
def own_stack(
    tmp_path: Path, isolated_nats: Server, redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    """One of each service on a NATS of its own: the session `stack` fixture's feature workers would answer
    other modules' `features.*` requests (tests/test_features_service.py runs its own feature service)."""
    stack = Stack(tmp_path / "stack", isolated_nats.extra["url"], redis_url, postgres_dsn, model_dir)
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()


def test_dashboard_metrics_exist_in_the_local_stack_scrape(own_stack: Stack) -> None:
    """Every metric the Grafana dashboard and the alert rules name is exported by some running service."""
    stack = own_stack
    r = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": transactions(300, "dash")}, timeout=60)
    assert r.status_code == 200, r.text
    scraped: set[str] = set()
    for p in stack.procs:
        port = p.http_port if p.name == "gateway" else p.metrics_port
        if port:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            scraped |= {line.split("{")[0].split()[0] for line in text.splitlines() if line and line[0] != "#"}
    assert scraped, "no service exported metrics"
    missing = missing_metrics(dashboard_metrics() | rule_metrics(), scraped)
    assert not missing, f"the dashboard / alert rules name metrics no service exports: {sorted(missing)}"
