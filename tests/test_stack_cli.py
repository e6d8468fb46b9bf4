"""`fraudmesh up` as a user runs it (a subprocess with FRAUDMESH_* in its environment), then `fraudmesh restart`
of a server and of a service instance, `fraudmesh nats-user`, and `fraudmesh down`. Real processes throughout."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
import redis

from deploy import nats_auth
from deploy.cli import main as cli
from deploy.demo import sample_batch
from deploy.servers import alive, free_port
from deploy.stack import StackState
from shared import subjects
from shared.messages import Codec, ScoreReply, ScoreRequest, Transaction

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-7f3a"


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDMESH_")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **settings}


@pytest.fixture(scope="module")
def local_stack(model_dir: Path) -> Iterator[StackState]:
    """`FRAUDMESH_API_KEYS=... fraudmesh up` with 1 gateway, 1 aggregator, 2 inference, 1 feature worker."""
    root = Path(tempfile.mkdtemp(prefix="fraudmesh-up-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as its own user when the suite runs as root
    run = root / "var"
    shutil.copytree(model_dir, run / "models")  # the session's model: `up` then trains nothing
    cmd = [sys.executable, "-m", "deploy.cli", "--run-dir", str(run), "up", "--features", "1"]
    cmd += ["--http-port", str(free_port())]
    res = subprocess.run(
        cmd, env=_env(FRAUDMESH_API_KEYS=KEY), cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    try:
        assert res.returncode == 0, f"fraudmesh up failed:\n{res.stdout}\n{res.stderr}"
        state = StackState.load(run)
        assert state is not None
        _, secret = nats_auth.credentials_of(state.nats_url)
        assert secret and secret not in res.stdout + res.stderr, "fraudmesh up printed the NATS admin password"
        assert "FRAUDMESH_API_KEYS" in res.stdout  # it says which settings it passed on (names only)
        assert KEY not in res.stdout
        yield state
    finally:
        cli(["--run-dir", str(run), "down"])
        shutil.rmtree(root, ignore_errors=True)


def _score(state: StackState, n: int = 20, key: str | None = KEY) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    body = {"transactions": sample_batch(n, seed=11)}
    return httpx.post(f"{state.gateway_url}/predict", json=body, headers=headers, timeout=30)


def test_the_callers_settings_reach_the_services(local_stack: StackState) -> None:
    r = _score(local_stack, key=None)
    assert r.status_code == 401, r.text
    assert "X-API-Key" in r.json()["message"]
    assert _score(local_stack, key="wrong").status_code == 401
    r = _score(local_stack)
    assert r.status_code == 200, r.text
    assert r.json()["complete"] is True
    assert stat.S_IMODE(os.stat(local_stack.path).st_mode) == 0o600  # it holds the NATS admin URL


def test_a_fresh_stack_serves_the_personalization_family(
    local_stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    """`up` found no personalization model: it trained the torch-free bootstrap one and loaded its world's features,
    so a user of that world is scored from their features, an unknown one as a cold start, and the demo prints one."""
    pers = Path(local_stack.run_dir) / "models-personalization"
    version = (pers / "active").read_text().strip()
    meta = json.loads((pers / version / "metadata.json").read_text())
    assert meta["kind"] == "pers-bootstrap" and version.startswith("pers-bootstrap-")
    ids = json.loads((pers / version / "ids.json").read_text())
    known = {"user_id": ids["users"][0], "item_id": ids["items"][0]}
    headers = {"X-API-Key": KEY}
    url = f"{local_stack.gateway_url}/score/personalization"
    r = httpx.post(url, json=known, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    x = r.json()
    assert x["model_version"] == version
    assert 0.0 <= x["relevance_score"] <= 1.0 and 0.0 < x["conversion_probability"] < 1.0
    assert "cold_start_user" not in x["behavioral_signals"] and "unknown_item" not in x["behavioral_signals"]
    assert x["user_segment"] != "new_visitor"  # the user's row is in Redis
    cold = httpx.post(url, json={"user_id": "user_nobody", "item_id": ids["items"][0]}, headers=headers, timeout=30)
    assert cold.status_code == 200, cold.text
    assert "cold_start_user" in cold.json()["behavioral_signals"]
    assert cli(["--run-dir", local_stack.run_dir, "demo", "-n", "20", "--api-key", KEY]) == 0
    out = capsys.readouterr().out
    assert "POST /score/personalization" in out and f"model {version}" in out


def test_a_bad_setting_stops_up_before_anything_starts(tmp_path: Path) -> None:
    run = tmp_path / "var"
    res = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "--run-dir", str(run), "up"],
        env=_env(FRAUDMESH_API_KEYZ=KEY),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert "FRAUDMESH_API_KEYZ" in res.stderr and "docs/settings.md" in res.stderr
    assert not (run / "stack.json").exists()


def test_restart_redis_keeps_its_data_and_scoring_works(local_stack: StackState) -> None:
    r = redis.Redis.from_url(local_stack.redis_url)
    r.set("fraudmesh-test:persisted", "yes")
    old_pid = local_stack.servers["redis"]["pid"]
    assert cli(["--run-dir", local_stack.run_dir, "restart", "redis"]) == 0
    state = StackState.load(Path(local_stack.run_dir))
    assert state is not None
    assert state.servers["redis"]["pid"] != old_pid and not alive(int(str(old_pid)))
    assert state.redis_url == local_stack.redis_url  # same port
    assert redis.Redis.from_url(state.redis_url).get("fraudmesh-test:persisted") == b"yes"
    resp = _score(state)
    assert resp.status_code == 200, resp.text
    assert resp.json()["complete"] is True


def test_restart_one_inference_instance_and_scoring_works(local_stack: StackState) -> None:
    before = {s.label: s for s in local_stack.services}
    assert cli(["--run-dir", local_stack.run_dir, "restart", "inference-0"]) == 0
    state = StackState.load(Path(local_stack.run_dir))
    assert state is not None
    after = {s.label: s for s in state.services}
    assert after["inference-0"].pid != before["inference-0"].pid
    assert not alive(before["inference-0"].pid)
    assert after["inference-0"].metrics_port == before["inference-0"].metrics_port
    assert after["inference-1"].pid == before["inference-1"].pid  # the other one untouched
    workers: set[str] = set()
    for _ in range(10):
        resp = httpx.post(
            f"{state.gateway_url}/predict?rescore=true",  # the same batch again: score it each time
            json={"transactions": sample_batch(400, seed=12), "partial_size": 50},
            headers={"X-API-Key": KEY},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        workers |= set(resp.json()["inference_workers"])
        if "inference-0" in workers:
            break
    assert "inference-0" in workers, f"the restarted worker scored nothing; workers seen: {workers}"


def test_restart_nats_keeps_users_and_streams_and_scoring_works(local_stack: StackState) -> None:
    assert cli(["--run-dir", local_stack.run_dir, "restart", "nats"]) == 0
    state = StackState.load(Path(local_stack.run_dir))
    assert state is not None and state.nats_url == local_stack.nats_url  # same port, same credentials
    # the services reconnect on their own, with their own users; the first answers may still be 503
    end = time.monotonic() + 30
    while (resp := _score(state)).status_code != 200:
        assert time.monotonic() < end, resp.text
        time.sleep(0.2)
    assert resp.json()["complete"] is True

    async def streams() -> set[str]:
        nc = await nats.connect(state.nats_url)
        try:
            return {info.config.name or "" for info in await nc.jetstream().streams_info()}
        finally:
            await nc.close()

    assert {subjects.PARTIALS_STREAM, subjects.DLQ_STREAM} <= asyncio.run(streams())


def test_restart_names_what_it_can_restart(local_stack: StackState, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--run-dir", local_stack.run_dir, "restart", "inference-9"]) == 2
    err = capsys.readouterr().err
    assert "nothing called 'inference-9'" in err and "redis" in err and "inference-1" in err


def test_nats_user_prints_working_public_credentials(
    local_stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["--run-dir", local_stack.run_dir, "nats-user", "public"]) == 0
    env = dict(line.removeprefix("export ").split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert env["FRAUDMESH_NATS_USER"] == "public"

    async def score() -> ScoreReply:
        nc = await nats.connect(
            env["FRAUDMESH_NATS_URL"], user=env["FRAUDMESH_NATS_USER"], password=env["FRAUDMESH_NATS_PASSWORD"]
        )
        try:
            codec = Codec()
            txs = msgspec.convert(sample_batch(5, seed=13), list[Transaction])
            msg = await nc.request(subjects.SCORE, codec.encode(ScoreRequest(transactions=txs)), timeout=10)
            return codec.decode(msg.data, ScoreReply)
        finally:
            await nc.close()

    assert asyncio.run(score()).complete
