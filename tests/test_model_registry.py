"""The model registry with real processes: versions in the NATS Object Store, the active version and the A/B
candidate in a NATS KV bucket, hot swaps on `fraud.model.control` while a batch is in flight, and the
`fraudmesh model` CLI. Each test has its own nats-server (so its own registry) and its own copy of the models."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from deploy.model_registry import RegistryAdmin, broadcast, count_workers
from deploy.servers import Server
from deploy.stack import ServiceProc
from inference_svc.artifact import read_metadata
from inference_svc.bootstrap import train_bootstrap
from inference_svc.registry import (
    MODELS_BUCKET,
    Registry,
    RegistryState,
    ab_point,
    goes_to_candidate,
    local_active,
)
from shared import subjects
from shared.messages import Codec, ErrorReply, Partial, ScoreReply, ScoreRequest, Transaction
from shared.model_messages import ActivateModel, ModelStatus, ModelWorkerState
from tests.stacks import Stack

ROOT = Path(__file__).resolve().parent.parent
V2 = "test-v2"


# ---------------------------------------------------------------------------------------------- helpers
def add_version(model_dir: Path, name: str, seed: int) -> str:
    """Train another bootstrap model (other seed) into `model_dir/name`, not activated."""
    scratch = model_dir.parent / f"scratch-{name}"
    meta = train_bootstrap(scratch, n=4000, seed=seed, activate=False)
    src = scratch / meta.version
    (src / "metadata.json").write_bytes(msgspec.json.encode(msgspec.structs.replace(meta, version=name)))
    src.rename(model_dir / name)
    shutil.rmtree(scratch)
    return name


@pytest.fixture
def models(tmp_path: Path, model_dir: Path) -> Path:
    """This test's model dir: the session's bootstrap model (active locally) plus version `test-v2`."""
    d = tmp_path / "models"
    shutil.copytree(model_dir, d)
    add_version(d, V2, seed=1234)
    return d


@pytest.fixture
def v1(models: Path) -> str:
    return local_active(models)


@pytest.fixture
def make_stack(tmp_path: Path, isolated_nats: Server, redis_url: str, postgres_dsn: str, models: Path):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []

    def make(env: dict[str, str] | None = None) -> Stack:
        s = Stack(tmp_path / f"stack{len(stacks)}", isolated_nats.extra["url"], redis_url, postgres_dsn, models, env)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()


def transactions(n: int, prefix: str) -> list[Transaction]:
    return [
        Transaction(
            card_id=f"card_{i % 997}",
            transaction_amount=float(i % 500) + 0.5,
            mcc_code=("5411", "7995", "5999")[i % 3],
            country_code=("US", "NG", "GB")[i % 3],
            channel=("pos", "ecom")[i % 2],
            transaction_id=f"{prefix}-{i:05d}",
        )
        for i in range(n)
    ]


async def score(url: str, txs: list[Transaction], request_id: str, partial_size: int, timeout_s: float) -> ScoreReply:
    codec = Codec()
    nc = await nats.connect(url)
    try:
        msg = await nc.request(
            subjects.SCORE,
            codec.encode(ScoreRequest(transactions=txs, request_id=request_id, partial_size=partial_size)),
            timeout=timeout_s + 1,
            headers={subjects.HDR_DEADLINE: str(int((time.time() + timeout_s) * 1000))},
        )
        reply = codec.decode(msg.data, ScoreReply)
    finally:
        await nc.close()
    assert reply.complete, reply.missing_transaction_ids[:10]
    assert [r.transaction_id for r in reply.results if r is not None] == [t.transaction_id for t in txs]
    return reply


def partial_versions(reply: ScoreReply, partial_size: int) -> list[str]:
    """The version of each partial, checking that every transaction of it was scored by that one version."""
    out = []
    for p in reply.partials:
        rows = reply.results[p.index * partial_size : p.index * partial_size + p.size]
        versions = {r.model_version for r in rows if r is not None}
        assert versions == {p.model_version}, f"partial {p.index} mixes versions {versions}"
        out.append(p.model_version)
    return out


async def wait_workers(url: str, n: int, timeout_s: float = 30.0) -> None:
    nc = await nats.connect(url)
    try:
        end = time.monotonic() + timeout_s
        while await count_workers(nc) < n:
            assert time.monotonic() < end, f"fewer than {n} inference workers answered"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def control(url: str, request: object, expect: int) -> list[object]:
    nc = await nats.connect(url)
    try:
        return await broadcast(nc, request, expect=expect, timeout_s=20.0)
    finally:
        await nc.close()


async def registry_state(url: str, models: Path) -> RegistryState:
    nc = await nats.connect(url)
    try:
        return await Registry(nc.jetstream(), models).read_state()
    finally:
        await nc.close()


async def cli(url: str, models: Path, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """`fraudmesh --run-dir <tmp> model <args> --nats-url <url> --model-dir <models>` as a real process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        "--run-dir",
        str(tmp_path / "no-stack"),
        "model",
        *args,
        "--nats-url",
        url,
        "--model-dir",
        str(models),
        cwd=ROOT,
        env={**os.environ, "FRAUDMESH_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    return proc.returncode or 0, out.decode(), err.decode()


def metrics(proc: ServiceProc) -> str:
    return httpx.get(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).text


def metric(proc: ServiceProc, sample: str) -> float:
    """Sum of the samples whose line starts with `sample` (name, optionally with the start of its labels)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics(proc).splitlines() if line.startswith(sample))


async def stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


# ------------------------------------------------------------------------------------------------- tests
def test_ab_split_is_a_deterministic_function_of_request_and_index() -> None:
    assert ab_point("r", 3) == ab_point("r", 3)
    assert ab_point("r", 3) != ab_point("r", 4)
    points = [ab_point("rid-x", i) for i in range(4000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert 0.45 < sum(p < 0.5 for p in points) / len(points) < 0.55
    assert not goes_to_candidate("r", 1, 0.0)
    assert goes_to_candidate("r", 1, 1.0)
    state = RegistryState().with_key("candidate_share", "0.25", 7).with_key("candidate", "v9", 8)
    assert (state.candidate, state.candidate_share, state.revision("candidate")) == ("v9", 0.25, 8)


async def test_activating_a_version_mid_batch_scores_every_transaction_once_with_one_version_each(  # type: ignore[no-untyped-def]
    make_stack, models: Path, v1: str, tmp_path: Path
) -> None:
    # 150 ms a partial: the batch (100 partials on 2 workers, ~7.5 s) outlasts the CLI process that activates v2
    # (2-5 s to start on a loaded machine; with 50 ms the batch could finish first)
    s: Stack = make_stack({"FRAUDMESH_CHAOS_INFERENCE_DELAY_MS": "150", "FRAUDMESH_INFERENCE_CONCURRENCY": "1"})
    url = s.state.nats_url
    s.start("aggregator")
    workers = s.start("inference", 2)
    await wait_workers(url, 2)
    assert all(metric(w, f'fraudmesh_model_active_info{{version="{v1}"}}') == 1 for w in workers)

    txs = transactions(10_000, "swap")
    batch = asyncio.create_task(score(url, txs, "swap-batch", partial_size=100, timeout_s=60))
    end = time.monotonic() + 20
    while sum(metric(w, 'fraudmesh_inference_partials_total{outcome="scored"}') for w in workers) < 2:
        assert time.monotonic() < end, "the batch never started"
        await asyncio.sleep(0.02)
    rc, out, err = await cli(url, models, tmp_path, "activate", V2)
    assert rc == 0, out + err
    assert out.count(f"active {V2}") == 2, out  # both workers answered with their new state
    assert not batch.done(), "the batch finished before the activation: nothing was swapped mid-batch"

    reply = await batch
    assert len(reply.partials) == 100
    versions = partial_versions(reply, 100)  # within each partial, one version
    assert set(versions) == {v1, V2}, "the swap did not happen mid-batch"
    assert all(p.deliveries == 1 for p in reply.partials), "a partial was redelivered"
    assert await stream_messages(url, subjects.PARTIALS_STREAM) == 0
    assert await stream_messages(url, subjects.DLQ_STREAM) == 0

    after = await score(url, transactions(1000, "after"), "after-swap", partial_size=100, timeout_s=30)
    assert set(partial_versions(after, 100)) == {V2}
    assert {r.model_version for r in after.results if r is not None} == {V2}
    for w in workers:
        assert metric(w, "fraudmesh_model_swaps_total") == 1
        assert metric(w, f'fraudmesh_model_active_info{{version="{V2}"}}') == 1
        assert f'fraudmesh_model_active_info{{version="{v1}"}}' not in metrics(w)
    assert (await registry_state(url, models)).active == V2


async def test_ab_candidate_gets_its_share_deterministically_even_on_redelivery(  # type: ignore[no-untyped-def]
    make_stack, models: Path, v1: str, tmp_path: Path
) -> None:
    s: Stack = make_stack(
        {
            "FRAUDMESH_CHAOS_INFERENCE_DELAY_MS": "40",
            "FRAUDMESH_INFERENCE_CONCURRENCY": "2",
            "FRAUDMESH_ACK_WAIT_S": "2",
        }
    )
    url = s.state.nats_url
    s.start("aggregator")
    victim, survivor = s.start("inference", 2)
    await wait_workers(url, 2)
    rc, out, err = await cli(url, models, tmp_path, "candidate", V2, "--share", "0.5")
    assert rc == 0, out + err
    assert out.count(f"candidate {V2} at 0.5") == 2, out
    state = await registry_state(url, models)
    assert (state.active, state.candidate, state.candidate_share) == ("", V2, 0.5)

    # the aggregator keys partials by a batch id (request id + attempt); watch them go by to learn it
    size, codec, seen = 40, Codec(), set()

    async def note(msg: Msg) -> None:
        seen.add(codec.decode(msg.data, Partial).request_id)

    watcher = await nats.connect(url)
    sub = await watcher.subscribe(subjects.PARTIALS_SUBJECT, cb=note)
    batch = asyncio.create_task(score(url, transactions(4000, "ab"), "ab-batch", partial_size=size, timeout_s=60))
    end = time.monotonic() + 20
    while metric(victim, 'fraudmesh_inference_partials_total{outcome="scored"}') < 1:
        assert time.monotonic() < end, "victim never received a partial"
        await asyncio.sleep(0.005)
    s.kill(victim, signal.SIGKILL)  # what it holds is redelivered to the survivor
    reply = await batch

    await sub.unsubscribe()
    await watcher.close()
    (batch_id,) = seen
    versions = partial_versions(reply, size)
    expected = [V2 if goes_to_candidate(batch_id, i, 0.5) else v1 for i in range(len(versions))]
    assert versions == expected  # the same (request, index) always meets the same version, whoever scores it
    assert 30 <= versions.count(V2) <= 70 and versions.count(v1) > 0
    redelivered = [p for p in reply.partials if p.deliveries > 1]
    assert redelivered, "no partial was redelivered: the kill did not hit an unacked partial"
    assert {p.worker_id for p in redelivered} == {"inference-1"}
    scored_by = {
        arm: metric(survivor, f'fraudmesh_model_partials_total{{arm="{arm}",model_version="{v}"}}')
        for arm, v in (("active", v1), ("candidate", V2))
    }
    assert scored_by["active"] > 0 and scored_by["candidate"] > 0, scored_by

    rc, out, err = await cli(url, models, tmp_path, "candidate", "--clear")
    assert rc == 0, out + err
    after = await score(url, transactions(2000, "noab"), "after-clear", partial_size=size, timeout_s=30)
    assert set(partial_versions(after, size)) == {v1}


async def test_activating_an_unknown_version_is_a_clear_error_and_changes_nothing(  # type: ignore[no-untyped-def]
    make_stack, models: Path, v1: str, tmp_path: Path
) -> None:
    s: Stack = make_stack()
    url = s.state.nats_url
    s.start("aggregator")
    (worker,) = s.start("inference", 1)
    await wait_workers(url, 1)

    rc, out, err = await cli(url, models, tmp_path, "activate", "no-such-version")
    assert rc == 1, out + err
    assert "'no-such-version' not found" in err and "Nothing was changed" in err and V2 in err, err
    rc, out, err = await cli(url, models, tmp_path, "activate", "../etc")
    assert rc == 1 and "not a model version name" in err, out + err
    rc, out, err = await cli(url, models, tmp_path, "candidate", "no-such-version", "--share", "0.2")
    assert rc == 1 and "not found" in err, out + err
    assert await registry_state(url, models) == RegistryState()  # the KV was not touched

    # the same straight over NATS, bypassing the CLI's checks: every worker refuses and keeps serving v1
    (answer,) = await control(url, ActivateModel(version="no-such-version"), expect=1)
    assert isinstance(answer, ModelWorkerState), answer
    assert answer.active == v1 and answer.swaps == 0
    assert "no-such-version" in answer.error and "nor published" in answer.error, answer.error
    (bad,) = await control(url, {"type": "activate_model", "version": "../../etc"}, expect=1)
    assert isinstance(bad, ErrorReply) and bad.code == "bad_request", bad
    (status,) = await control(url, ModelStatus(), expect=1)
    assert isinstance(status, ModelWorkerState) and status.active == v1 and not status.error

    reply = await score(url, transactions(500, "still-v1"), "still-v1", partial_size=100, timeout_s=30)
    assert set(partial_versions(reply, 100)) == {v1}
    assert metric(worker, "fraudmesh_model_swaps_total") == 0
    assert metric(worker, "fraudmesh_model_swap_failures_total") >= 1


async def test_a_worker_started_after_activation_fetches_and_serves_the_registry_version(  # type: ignore[no-untyped-def]
    make_stack, models: Path, model_dir: Path, v1: str, tmp_path: Path
) -> None:
    s: Stack = make_stack()
    url = s.state.nats_url
    s.start("aggregator")
    (first,) = s.start("inference", 1)
    await wait_workers(url, 1)
    rc, out, err = await cli(url, models, tmp_path, "activate", V2)
    assert rc == 0, out + err
    assert f"active {V2}" in out, out

    # another host: its model dir has only the bootstrap model, and its local `active` file names v1
    other = tmp_path / "other-host-models"
    shutil.copytree(model_dir, other)
    assert not (other / V2).exists() and local_active(other) == v1
    (late,) = s.start("inference", 1, env={"FRAUDMESH_MODEL_DIR": str(other)})
    await wait_workers(url, 2)
    states = [r for r in await control(url, ModelStatus(), expect=2) if isinstance(r, ModelWorkerState)]
    assert {(r.instance_id, r.active) for r in states} == {("inference-0", V2), ("inference-1", V2)}
    late_state = next(r for r in states if r.instance_id == "inference-1")
    assert late_state.swaps == 0  # it started on the registry's version, no local version first
    for name in ("model.onnx", "metadata.json"):  # fetched from the object store, byte for byte
        assert hashlib.sha256((other / V2 / name).read_bytes()).digest() == (
            hashlib.sha256((models / V2 / name).read_bytes()).digest()
        )
    assert read_metadata(other / V2 / "metadata.json").version == V2
    assert local_active(other) == v1  # the local file stays the bootstrap fallback

    s.kill(first, signal.SIGTERM)
    reply = await score(url, transactions(1000, "late"), "late-worker", partial_size=100, timeout_s=30)
    assert set(partial_versions(reply, 100)) == {V2}
    assert {p.worker_id for p in reply.partials} == {"inference-1"}
    assert metric(late, f'fraudmesh_model_active_info{{version="{V2}"}}') == 1

    rc, out, err = await cli(url, models, tmp_path, "list")
    assert rc == 0, out + err
    line = next(x for x in out.splitlines() if x.startswith(V2))
    assert "ACTIVE" in line and line.split()[3:5] == ["yes", "yes"], out
    assert f"inference-1: active {V2}" in out, out
    nc = await nats.connect(url)
    try:
        names = {i.name for i in await (await nc.jetstream().object_store(MODELS_BUCKET)).list()}
    finally:
        await nc.close()
    assert {f"{V2}/model.onnx", f"{V2}/metadata.json", f"{V2}/.manifest.json"} <= names

    # a KV change alone, with no control message (one a worker missed), reaches the worker through its watch
    nc = await nats.connect(url)
    try:
        await RegistryAdmin(nc.jetstream(), models).set_active(v1)
        end = time.monotonic() + 5.0  # well within the 15 s re-read: this is the watch
        while True:
            (state,) = await broadcast(nc, ModelStatus(), expect=1, timeout_s=5.0)
            assert isinstance(state, ModelWorkerState)
            if state.active == v1:
                break
            assert time.monotonic() < end, f"the worker did not follow the KV: {state}"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert state.swaps == 1
