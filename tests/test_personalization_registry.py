"""One registry, two families: personalization versions published to the same NATS object store as fraud's and
activated through the same KV under the family's own key (`personalization.active`), by `fraudmesh model activate
--family personalization`. Real nats-server, Redis, PostgreSQL and service processes.

A worker serves the registry's version of the family, not its directory's `active` file: after a restart, and
when its directory lacks the version (fetched from the object store). Fraud's key, versions and listing are
untouched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import KeyNotFoundError

from deploy.cli import main as cli
from inference_svc.personalization.artifact import active_version
from inference_svc.registry import goes_to_candidate
from shared import subjects
from tests.personalization_control import control_personalization
from tests.stacks import Stack, own_stack
from trainer.personalization.bootstrap import train_bootstrap

PAIR = {"user_id": "user_000001", "item_id": "item_unknown"}


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two bootstrap versions in one directory, the first active there."""
    d = tmp_path_factory.mktemp("pers-registry") / "models-personalization"
    first = str(train_bootstrap(d)["version"])
    second = str(train_bootstrap(d, activate=False)["version"])
    assert active_version(d) == first and first != second
    return {"dir": d, "first": first, "second": second, "run": tmp_path_factory.mktemp("cli-run")}


@pytest.fixture(scope="module")
def rstack(
    tmp_path_factory: pytest.TempPathFactory, family: dict[str, Any], redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    env = {"FRAUDMESH_PERSONALIZATION_MODEL_DIR": str(family["dir"])}
    with own_stack(tmp_path_factory.mktemp("rstack"), redis_url, postgres_dsn, model_dir, env=env) as s:
        yield s


def _model_cli(stack: Stack, family: dict[str, Any], *args: str) -> int:
    return cli(["--run-dir", str(family["run"]), "model", *args, "--nats-url", stack.state.nats_url])


def _scored_by(stack: Stack) -> str:
    r = httpx.post(f"{stack.gateway_url}/score/personalization", json=PAIR, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def _kv(url: str, key: str) -> str | None:
    async def get() -> str | None:
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value(subjects.MODEL_STATE_BUCKET)
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return None
            return (entry.value or b"").decode()
        finally:
            await nc.close()

    return asyncio.run(get())


def _until(check: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "the condition did not hold in time"
        time.sleep(0.2)


def test_activate_through_the_registry_under_the_familys_key(
    rstack: Stack,
    family: dict[str, Any],
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUDMESH_REDIS_URL", redis_url)  # where the CLI loads the version's world features
    assert _scored_by(rstack) == family["first"]  # no registry entry yet: the directory's `active`
    assert (
        _model_cli(
            rstack,
            family,
            "activate",
            "--family",
            "personalization",
            family["second"],
            "--model-dir",
            str(family["dir"]),
        )
        == 0
    )
    assert "feature rows of " + family["second"] + "'s world loaded into Redis" in capsys.readouterr().out
    assert _scored_by(rstack) == family["second"]
    r = httpx.post(f"{rstack.gateway_url}/score/personalization", json=PAIR, timeout=30).json()
    assert "cold_start_user" not in r["behavioral_signals"]  # the user's row of that world is in Redis
    url = rstack.state.nats_url
    assert _kv(url, "personalization.active") == family["second"]
    assert _kv(url, "active") is None  # fraud's key untouched: its workers still serve their local model
    assert active_version(family["dir"]) == family["first"]  # the registry, not the directory, says what is served
    models = {f["name"]: f for f in httpx.get(f"{rstack.gateway_url}/models", timeout=10).json()["families"]}
    assert models["personalization"]["active"]["version"] == family["second"]
    assert {family["first"], family["second"]} <= set(models["personalization"]["versions"])
    assert models["fraud"]["status"] == "serving"
    assert not any(v.startswith("pers-") for v in models["fraud"]["versions"])  # the families' listings stay apart


def test_a_restarted_worker_serves_the_registrys_version(rstack: Stack, family: dict[str, Any]) -> None:
    old = next(p for p in rstack.procs if p.name == "inference")
    rstack.kill(old)
    rstack.procs.remove(old)
    rstack.start("inference")
    _until(lambda: httpx.post(f"{rstack.gateway_url}/score/personalization", json=PAIR, timeout=30).status_code == 200)
    assert _scored_by(rstack) == family["second"]
    assert active_version(family["dir"]) == family["first"]


def test_a_worker_without_the_version_fetches_it_from_the_object_store(
    rstack: Stack, family: dict[str, Any], tmp_path: Path
) -> None:
    empty = tmp_path / "elsewhere"
    rstack.start("inference", env={"FRAUDMESH_PERSONALIZATION_MODEL_DIR": str(empty)})
    rstack.wait_health("inference", 2)
    _until(lambda: len(control_personalization(rstack.state.nats_url, 2)) == 2)
    states = control_personalization(rstack.state.nats_url, 2)
    assert {s.version for s in states} == {family["second"]}, states
    assert (empty / family["second"] / "model.onnx").is_file()
    assert (empty / family["second"] / "ids.json").is_file()


def test_model_list_shows_each_familys_versions(
    rstack: Stack, family: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _model_cli(rstack, family, "list", "--family", "personalization", "--model-dir", str(family["dir"])) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(family["second"]))
    assert "ACTIVE" in line and "pers-bootstrap" in line
    assert family["first"] in out
    assert _model_cli(rstack, family, "list") == 0
    assert "pers-bootstrap" not in capsys.readouterr().out.split("workers:")[0]


def test_the_fraud_familys_operations_never_touch_a_personalization_version(
    rstack: Stack, family: dict[str, Any]
) -> None:
    """The families share the object store: `DELETE /models/{version}` and `POST /models/load` act on fraud's
    versions only, so the served personalization version can be neither deleted nor loaded as a fraud model."""
    version = family["second"]
    r = httpx.delete(f"{rstack.gateway_url}/models/{version}", timeout=30)
    assert r.status_code == 404, r.text
    assert version in r.json()["message"]
    r = httpx.post(f"{rstack.gateway_url}/models/load", json={"version": version}, timeout=30)
    assert r.status_code == 404, r.text
    assert _kv(rstack.state.nats_url, "personalization.active") == version
    assert _scored_by(rstack) == version  # still published and served
    models = {f["name"]: f for f in httpx.get(f"{rstack.gateway_url}/models", timeout=10).json()["families"]}
    assert version in models["personalization"]["versions"]


def test_an_unknown_version_changes_nothing(
    rstack: Stack,
    family: dict[str, Any],
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUDMESH_REDIS_URL", redis_url)
    assert (
        _model_cli(
            rstack, family, "activate", "--family", "personalization", "pers-nowhere", "--model-dir", str(family["dir"])
        )
        == 1
    )
    assert "pers-nowhere" in capsys.readouterr().err
    assert _kv(rstack.state.nats_url, "personalization.active") == family["second"]


def test_ab_split_per_family_by_request_id(rstack: Stack, family: dict[str, Any]) -> None:
    """`fraudmesh model candidate --family personalization V --share 0.5`: every worker (one of them fetched V
    from the object store) sends the requests whose id hashes below the share to V, the same id always to the same
    version; `--clear` ends it. Fraud's candidate key stays unset."""
    first, second = family["first"], family["second"]
    d = str(family["dir"])
    assert (
        _model_cli(
            rstack, family, "candidate", "--family", "personalization", first, "--share", "0.5", "--model-dir", d
        )
        == 0
    )
    ids = [f"ab-{i:03d}" for i in range(30)]

    def expected(rid: str) -> str:
        return first if goes_to_candidate(rid, 0, 0.5) else second

    def scored(rid: str) -> str:
        r = httpx.post(
            f"{rstack.gateway_url}/score/personalization", json=PAIR, headers={"X-Request-Id": rid}, timeout=30
        )
        assert r.status_code == 200, r.text
        return str(r.json()["model_version"])

    assert {expected(rid) for rid in ids} == {first, second}  # both arms are exercised
    _until(lambda: all(scored(rid) == expected(rid) for rid in ids))  # every worker has loaded the candidate
    for rid in ids:  # and it holds: each id, each worker, the same version
        assert scored(rid) == expected(rid)
    assert _kv(rstack.state.nats_url, "candidate") is None
    assert _model_cli(rstack, family, "candidate", "--family", "personalization", "--clear", "--model-dir", d) == 0
    _until(lambda: {scored(rid) for rid in ids} == {second})
