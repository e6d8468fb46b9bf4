"""examples/list_services.py (plain nats-py, no fraudmesh import) lists every running service instance
through `$SRV.INFO`, with its version and endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from deploy.nats_auth import credentials_of, strip_credentials
from tests.stacks import Stack

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "list_services.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
        env=env,
    )


def test_the_script_imports_nothing_from_fraudmesh() -> None:
    text = SCRIPT.read_text()
    for package in ("shared", "gateway", "aggregator", "inference_svc", "feature_svc", "deploy"):
        assert f"from {package}" not in text and f"import {package}" not in text, package


def test_every_running_service_is_listed_with_version_and_endpoints(stack: Stack) -> None:
    done = run("--nats-url", stack.state.nats_url, "--json", "--wait", "1.0")
    assert done.returncode == 0, done.stderr
    infos = [json.loads(line) for line in done.stdout.splitlines()]
    by_name = Counter(i["name"] for i in infos)
    # the stack runs 1 gateway, 1 aggregator, 2 inference workers and 1 feature worker
    assert by_name["aggregator"] >= 1 and by_name["inference"] >= 2 and by_name["feature"] >= 1, by_name
    assert by_name["gateway"] >= 1, by_name
    for info in infos:
        assert info["version"] == "0.1.0", info
        assert info["metadata"]["instance_id"], info
    endpoints = {i["name"]: {e["name"]: e for e in i["endpoints"] or []} for i in infos}
    gateway = next(i for i in infos if i["name"] == "gateway")
    assert gateway["metadata"]["http"].endswith(f":{stack.gateway_url.rsplit(':', 1)[1]}"), gateway
    assert endpoints["aggregator"]["score"]["subject"] == "fraud.score"
    assert endpoints["aggregator"]["score"]["queue_group"] == "aggregator"
    assert endpoints["aggregator"]["results"]["metadata"]["kind"] == "listener"
    assert endpoints["inference"]["partials"]["metadata"] == {
        "kind": "consumer",
        "stream": "FRAUD_PARTIALS",
        "durable": "inference",
    }
    assert endpoints["inference"]["partials"]["subject"] == "fraud.partials"
    assert endpoints["inference"]["model_state"]["metadata"]["kind"] == "kv_watch"
    assert endpoints["feature"]["health"]["subject"] == "fraudmesh.health.feature"


def test_the_table_names_each_instance_and_its_counts(stack: Stack) -> None:
    done = run("--nats-url", stack.state.nats_url, "--stats")
    assert done.returncode == 0, done.stderr
    assert "aggregator 0.1.0" in done.stdout and "inference 0.1.0" in done.stdout
    assert "partials         consumer  fraud.partials  (queue inference)  messages=" in done.stdout


def test_no_nats_is_a_clear_error() -> None:
    done = run("--nats-url", "nats://127.0.0.1:1", "--wait", "0.2")
    assert done.returncode == 1
    assert "cannot reach NATS at nats://127.0.0.1:1" in done.stderr


def test_credentials_come_from_the_variables_fraudmesh_nats_user_prints(stack: Stack) -> None:
    """`eval "$(fraudmesh nats-user admin)"` then the script, as examples/README.md says: URL, user, password
    from FRAUDMESH_NATS_*; a user NATS refuses is named."""
    user, password = credentials_of(stack.state.nats_url)
    env = {
        **os.environ,
        "FRAUDMESH_NATS_URL": strip_credentials(stack.state.nats_url),
        "FRAUDMESH_NATS_USER": user,
        "FRAUDMESH_NATS_PASSWORD": password,
    }
    done = run("--json", "--wait", "1.0", env=env)
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["name"] for line in done.stdout.splitlines()} >= {"aggregator", "inference"}
    refused = run("--wait", "0.2", env={**env, "FRAUDMESH_NATS_PASSWORD": "wrong"})
    assert refused.returncode == 1
    assert f"refused user {user!r}" in refused.stderr, refused.stderr
