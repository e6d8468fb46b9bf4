"""Async scoring jobs (seed 004: `POST /predict/async`, `GET /jobs/{job_id}`, `GET /jobs`) on real servers.

The module runs its own nats-server (jobs and the bucket's TTL are its own) with an aggregator, an inference worker
and a feature worker, and starts gateways as each test needs them: one that accepts jobs but runs none
(`FRAUDMESH_JOB_CONCURRENCY=0`) builds a backlog; one with a runner drains it; a runner is SIGKILLed mid-run and
restarted; a gateway with a short TTL shows expiry. Nothing is mocked and nothing is timed: waits are bounded
polls, and the assertions are about order and outcome.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.servers import Server, start_nats
from deploy.stack import ServiceProc, wait_ready
from tests.stacks import Stack

RANK = {"high": 0, "normal": 1, "low": 2}
WAIT_S = 180.0
"""Upper bound of a wait for jobs to finish (a poll limit for a loaded machine, not an assertion on speed)."""


@pytest.fixture(scope="module")
def jobs_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_nats(tmp_path_factory.mktemp("jobs-nats"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, jobs_nats: Server, redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    """Aggregator, inference (a little slow, so that jobs take a while) and feature worker: no gateway yet."""
    s = Stack(
        tmp_path_factory.mktemp("jobs-stack"),
        jobs_nats.extra["url"],
        redis_url,
        postgres_dsn,
        model_dir,
        env={"FRAUDMESH_JOB_ACK_WAIT_S": "2", "FRAUDMESH_JOB_POLL_MAX_MS": "100"},
    )
    s.start("aggregator")
    s.start("inference", env={"FRAUDMESH_CHAOS_INFERENCE_DELAY_MS": "20"})
    s.start("feature")
    try:
        yield s
    finally:
        s.stop()


def gateway(stack: Stack, concurrency: int, **env: str) -> tuple[ServiceProc, str]:
    (proc,) = stack.start("gateway", env={"FRAUDMESH_JOB_CONCURRENCY": str(concurrency), **env})
    wait_ready(stack.gateway_url, 60, [proc])  # not Stack.wait_ready: the gateways stopped before count as dead
    stack.wait_health("inference", 1)
    return proc, stack.gateway_url


def stop(stack: Stack, proc: ServiceProc) -> None:
    stack.kill(proc, signal.SIGTERM)


def transactions(tag: str, n: int) -> list[dict[str, Any]]:
    return [
        {"card_id": f"card_{tag}_{i}", "transaction_amount": 10.0 + i, "merchant_id": "merchant_12345"}
        for i in range(n)
    ]


def submit(url: str, priority: str, tag: str, n: int = 3) -> str:
    body = {"transactions": transactions(tag, n), "priority": priority, "timeout_ms": 20000}
    r = httpx.post(f"{url}/predict/async", json=body, params={"ingest": "false"}, timeout=30)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def job(url: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/jobs/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def jobs_of(url: str, status: str) -> list[dict[str, Any]]:
    """The jobs with one status (at most 100), in one request."""
    jobs: list[dict[str, Any]] = httpx.get(f"{url}/jobs", params={"status": status, "limit": 100}, timeout=30).json()[
        "jobs"
    ]
    return jobs


def pending_of(url: str, priority: str) -> list[str]:
    return [j["job_id"] for j in jobs_of(url, "pending") if j["priority"] == priority]


def wait_finished(url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every job's final view (completed or failed), polling the unfinished ones."""
    done: dict[str, dict[str, Any]] = {}
    end = time.monotonic() + WAIT_S
    while len(done) < len(ids) and time.monotonic() < end:
        for job_id in ids:
            if job_id not in done:
                view = job(url, job_id)
                if view["status"] in ("completed", "failed"):
                    done[job_id] = view
        time.sleep(0.2)
    assert len(done) == len(ids), f"{len(ids) - len(done)} jobs did not finish"
    return done


def test_seed_004_body_is_queued_then_completed_with_the_predict_result(backend: Stack) -> None:
    proc, url = gateway(backend, 2)
    try:
        seed = {  # seed 004's example, with transactions where the seed has `features`
            "transactions": [
                {
                    "card_id": "card_00001234",
                    "transaction_amount": 150.0,
                    "merchant_id": "merchant_12345",
                    "mcc_code": "5411",
                    "country_code": "US",
                }
            ],
            "request_id": "optional-client-request-id",
            "priority": "high",
            "timeout_ms": 5000,
        }
        r = httpx.post(f"{url}/predict/async", json=seed, params={"ingest": "false"}, timeout=30)
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert set(accepted) >= {"job_id", "status", "eta_seconds", "timestamp"}
        assert accepted["status"] == "pending" and accepted["eta_seconds"] >= 0
        assert r.headers["Location"] == f"/jobs/{accepted['job_id']}"
        view = wait_finished(url, [accepted["job_id"]])[accepted["job_id"]]
        assert view["status"] == "completed", view
        assert view["priority"] == "high" and view["attempts"] == 1 and view["eta_seconds"] is None
        result = view["result"]
        assert result["request_id"] == "optional-client-request-id" and result["complete"] is True
        (score,) = result["results"]
        assert score["transaction_id"] == "optional-client-request-id-0"
        assert 0.0 <= score["fraud_score"] <= 1.0 and score["risk_level"] in ("low", "medium", "high", "critical")

        listed = httpx.get(f"{url}/jobs", params={"status": "completed", "limit": 100}, timeout=30).json()
        assert accepted["job_id"] in [j["job_id"] for j in listed["jobs"]]
        assert all(j["status"] == "completed" for j in listed["jobs"])
        one = httpx.get(f"{url}/jobs", params={"limit": 1}, timeout=30).json()
        assert len(one["jobs"]) == 1 and one["total_count"] >= 1
        assert set(one["jobs"][0]) >= {"job_id", "status", "created_at", "age_seconds"}
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        assert 'fraudmesh_handler_messages_total{handler="jobs",outcome="ok",service="jobs"}' in metrics
    finally:
        stop(backend, proc)


def test_bad_input_is_a_400_naming_the_field_and_an_unknown_job_a_404(backend: Stack) -> None:
    proc, url = gateway(backend, 0)
    try:
        good = {"transactions": transactions("bad", 2)}
        cases = [
            ({**good, "priority": "urgent"}, "$.priority"),
            ({**good, "timeout_ms": -5}, "$.timeout_ms"),
            ({**good, "timeout_ms": 10**9}, "$.timeout_ms"),
            ({"transactions": [good["transactions"][0], {"card_id": "card_x"}]}, "$.transactions[1]"),
            ({"transactions": [{"card_id": "c 1", "transaction_amount": 1}]}, "$.transactions[0].card_id"),
            ({"transactions": []}, "$.transactions"),
            ({**good, "colour": "red"}, "$"),
        ]
        for body, path in cases:
            r = httpx.post(f"{url}/predict/async", json=body, timeout=30)
            assert r.status_code == 400, (body, r.text)
            paths = [e["path"] for e in r.json()["errors"]]
            assert any(p.startswith(path) for p in paths), (body, paths)
        for params, path in (({"limit": 0}, "query.limit"), ({"status": "lost"}, "query.status")):
            r = httpx.get(f"{url}/jobs", params=params, timeout=30)
            assert r.status_code == 400, r.text
            assert [e["path"] for e in r.json()["errors"]] == [path]
        for unknown in ("0" * 32, "not-a-job", "x.y"):
            r = httpx.get(f"{url}/jobs/{unknown}", timeout=30)
            assert r.status_code == 404, r.text
            assert r.json()["code"] == "not_found" and "unknown, or the job expired" in r.json()["message"]
    finally:
        stop(backend, proc)


def test_high_priority_jobs_finish_first_and_overtake_queued_low_ones(backend: Stack) -> None:
    """100 jobs of mixed priority queued in random order while no runner runs (a backlog), then one runner:
    every high job finishes before any normal one, every normal before any low. A high job submitted while low
    ones are still queued starts before them."""
    api, api_url = gateway(backend, 0)
    runner: ServiceProc | None = None
    try:
        priorities = ["high"] * 34 + ["normal"] * 33 + ["low"] * 33
        random.Random(11).shuffle(priorities)
        ids = [submit(api_url, p, f"prio{i}") for i, p in enumerate(priorities)]
        priority_of = dict(zip(ids, priorities, strict=True))
        assert all(job(api_url, i)["status"] == "pending" for i in ids)

        runner, _ = gateway(backend, 1)
        lows = sum(p == "low" for p in priorities)
        end = time.monotonic() + WAIT_S  # wait until the lows have begun, then submit a late high job
        while len(pending_of(api_url, "low")) == lows:
            assert time.monotonic() < end, "no low job started"
            time.sleep(0.02)
        late = submit(api_url, "high", "late")
        still_queued = pending_of(api_url, "low")

        done = wait_finished(api_url, [*ids, late])
        assert all(v["status"] == "completed" for v in done.values())
        by_finish = sorted(ids, key=lambda i: done[i]["finished_at"])
        ranks = [RANK[priority_of[i]] for i in by_finish]
        assert ranks == sorted(ranks), "a lower-priority job finished before a higher one"
        by_start = sorted(ids, key=lambda i: done[i]["started_at"])
        assert [RANK[priority_of[i]] for i in by_start] == sorted(ranks)
        # the late high job overtook the lows still queued when it came (at most one of them could already have
        # been taken by the runner, a slot's worth, without its state saying so yet)
        overtaken = [i for i in still_queued if done[i]["started_at"] > done[late]["started_at"]]
        assert len(still_queued) - len(overtaken) <= 1, (len(still_queued), len(overtaken))
        assert overtaken, "no low job was still queued when the late high job came"
    finally:
        if runner is not None:
            stop(backend, runner)
        stop(backend, api)


def test_a_gateway_killed_mid_run_loses_no_job(backend: Stack) -> None:
    """100 jobs submitted to a gateway that runs them; it is SIGKILLed while running some; a restarted gateway
    finishes them all: every job completes, and those that were running when it died ran again."""
    api, api_url = gateway(backend, 0)  # takes the jobs, and reads their state while no runner is up
    restarted: ServiceProc | None = None
    try:
        rng = random.Random(7)
        ids = [submit(api_url, rng.choice(list(RANK)), f"kill{i}", n=20) for i in range(100)]
        runner, url = gateway(backend, 2)
        end = time.monotonic() + WAIT_S
        while len(ids) - len(jobs_of(api_url, "pending")) - len(jobs_of(api_url, "running")) < 5:
            assert time.monotonic() < end, "the runner finished no job"
            time.sleep(0.02)
        backend.kill(runner, signal.SIGKILL)

        at_death = {i: job(api_url, i) for i in ids}
        running = [i for i, v in at_death.items() if v["status"] == "running"]
        assert running, "no job was running when the gateway died"
        assert any(v["status"] == "pending" for v in at_death.values()), "the kill came after the last job"

        restarted, url = gateway(backend, 2)
        done = wait_finished(url, ids)
        assert [i for i, v in done.items() if v["status"] != "completed"] == []
        for i, v in done.items():
            assert v["result"]["complete"] is True and len(v["result"]["results"]) == 20, i
            assert all(s is not None for s in v["result"]["results"])
        assert all(done[i]["attempts"] >= 2 for i in running), [done[i]["attempts"] for i in running]
    finally:
        if restarted is not None:
            stop(backend, restarted)
        stop(backend, api)


def test_a_job_that_keeps_failing_ends_failed_with_the_error(backend: Stack) -> None:
    """A deadline too short to score in is a retryable failure: the job goes back to pending with the error, is
    run again, and after FRAUDMESH_JOB_MAX_DELIVER runs it is `failed`, with the error that says what to do."""
    proc, url = gateway(backend, 1, FRAUDMESH_JOB_MAX_DELIVER="2")
    try:
        body = {"transactions": transactions("fail", 2), "timeout_ms": 0.001}
        r = httpx.post(f"{url}/predict/async", json=body, params={"ingest": "false"}, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        view = wait_finished(url, [job_id])[job_id]
        assert view["status"] == "failed" and view["result"] is None, view
        assert view["attempts"] == 2 and view["finished_at"] is not None
        error = view["error"]
        assert error["code"] in ("deadline_exceeded", "unavailable") and error["retryable"] is True
        assert error["message"]
    finally:
        stop(backend, proc)


def test_an_expired_job_answers_404(backend: Stack) -> None:
    """With FRAUDMESH_JOB_TTL_S=3 (the bucket's max age, set by the gateway that declares it), a finished job's
    state expires: GET /jobs/{id} answers 404 and the job is no longer listed. Last in the module: it shortens the
    TTL of every job of this nats-server."""
    proc, url = gateway(backend, 1, FRAUDMESH_JOB_TTL_S="3")
    try:
        job_id = submit(url, "normal", "ttl")
        assert wait_finished(url, [job_id])[job_id]["status"] == "completed"
        end = time.monotonic() + 60
        while (r := httpx.get(f"{url}/jobs/{job_id}", timeout=30)).status_code == 200:
            assert time.monotonic() < end, "the job never expired"
            time.sleep(0.25)
        assert r.status_code == 404, r.text
        assert "expired" in r.json()["message"]
        listed = httpx.get(f"{url}/jobs", params={"limit": 100}, timeout=30).json()
        assert job_id not in [j["job_id"] for j in listed["jobs"]]
    finally:
        stop(backend, proc)
