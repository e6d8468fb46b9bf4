"""The async jobs of every gateway, in NATS (seed 004's `POST /predict/async`, `GET /jobs`).

- State: KV bucket `fraudmesh_jobs`, key `<job_id>` = `JobRecord` (JSON), key `<job_id>.result` = the result
  shaped as `POST /predict`'s reply (JSON). The bucket's max age is FRAUDMESH_JOB_TTL_S: a key expires that long
  after its last write, and an expired job answers 404 like an unknown one.
- Work: JetStream stream FRAUD_JOBS (work queue), one subject per priority (`fraud.jobs.high|normal|low`), a
  durable consumer per priority; job runners (gateway/job_runner.py) drain high before normal before low.

Nothing lives in the gateway's memory but an estimate of how long a job takes (for `eta_seconds`), so any
gateway answers for any job, and jobs survive a gateway restart. Every NATS failure becomes a 503 that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from gateway.bridge import BridgeError, NatsBridge, unavailable
from shared import subjects
from shared.jetstream import ensure_jobs
from shared.job_messages import JOB_ID, JobMessage, JobRecord, JobStatus, Priority
from shared.messages import Codec
from shared.settings import Settings

NATS_TIMEOUT_S = 5.0
_record_decoder = msgspec.json.Decoder(JobRecord)
_json = msgspec.json.Encoder()


def result_key(job_id: str) -> str:
    return f"{job_id}.result"


class JobTiming:
    """How long a job runs here: an exponentially weighted mean of the runs this process saw (for estimates)."""

    def __init__(self, initial_s: float = 0.2, weight: float = 0.2) -> None:
        self.mean_s = initial_s
        self.weight = weight

    def observe(self, seconds: float) -> None:
        self.mean_s += self.weight * (seconds - self.mean_s)


class JobStore:
    def __init__(self, bridge: NatsBridge, settings: Settings) -> None:
        self.bridge = bridge
        self.settings = settings
        self.codec = Codec()
        self.timing = JobTiming()
        self.on_submit: Callable[[], None] | None = None
        """Called after a job is queued (the local runner's `wake`)."""
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ access
    def _js(self, request_id: str) -> JetStreamContext:
        return self.bridge.require_nc(request_id).jetstream(timeout=NATS_TIMEOUT_S)

    async def kv(self, request_id: str = "") -> KeyValue:
        """The bucket, declared (with FRAUD_JOBS and its consumers) on first use."""
        if self._kv is None:
            async with self._lock:
                if self._kv is None:
                    try:
                        self._kv = await ensure_jobs(self._js(request_id), self.settings)
                    except BridgeError:
                        raise
                    except Exception as exc:
                        raise jetstream_unavailable(
                            request_id, "declare the job queue and the jobs bucket", exc
                        ) from None
        return self._kv

    # ------------------------------------------------------------------------------------------- write
    async def submit(self, job: JobMessage) -> JobRecord:
        """Store the job's state (pending), then queue it on its priority's subject. 503 if either fails."""
        rid = job.request_id
        kv = await self.kv(rid)
        try:
            ahead = await self.queued_ahead(job.priority, rid)
        except Exception:
            ahead = 0
        record = JobRecord(
            job_id=job.job_id,
            status="pending",
            priority=job.priority,
            request_id=job.request_id,
            transactions=len(job.transactions),
            timeout_ms=job.timeout_ms,
            created_at=time.time(),
            eta_s=round(self.estimate_s(ahead + 1), 3),
        )
        try:
            await kv.put(job.job_id, _json.encode(record))
        except Exception as exc:
            raise jetstream_unavailable(rid, "store the job", exc) from None
        headers = {subjects.HDR_MSG_ID: job.job_id, subjects.HDR_REQUEST_ID: rid}
        try:
            await self._js(rid).publish(subjects.job_subject(job.priority), self.codec.encode(job), headers=headers)
        except Exception as exc:
            with contextlib.suppress(Exception):  # else the record expires with the TTL
                await kv.delete(job.job_id)
            raise jetstream_unavailable(rid, f"queue the job on {subjects.JOBS_STREAM}", exc) from None
        if self.on_submit is not None:
            self.on_submit()
        return record

    async def save(self, record: JobRecord) -> None:
        """Write a job's state (raises the NATS error: the runner's policy retries)."""
        await (await self.kv(record.request_id)).put(record.job_id, _json.encode(record))

    async def save_result(self, job_id: str, result: bytes) -> None:
        await (await self.kv()).put(result_key(job_id), result)

    # -------------------------------------------------------------------------------------------- read
    async def get(self, job_id: str, request_id: str = "") -> JobRecord | None:
        """The job's state; None when the id is unknown or has expired."""
        if not JOB_ID.match(job_id):
            return None
        kv = await self.kv(request_id)
        try:
            entry = await kv.get(job_id)
        except KeyNotFoundError:
            return None
        except Exception as exc:
            raise jetstream_unavailable(request_id, "read the job", exc) from None
        return _record_decoder.decode(entry.value or b"") if entry.value else None

    async def result(self, job_id: str, request_id: str = "") -> bytes | None:
        kv = await self.kv(request_id)
        try:
            entry = await kv.get(result_key(job_id))
        except KeyNotFoundError:
            return None
        except Exception as exc:
            raise jetstream_unavailable(request_id, "read the job's result", exc) from None
        return entry.value or None

    async def list(self, status: JobStatus | None, limit: int, request_id: str) -> tuple[list[JobRecord], int]:
        """The newest `limit` jobs (with `status`, if given) and how many there are in all. Reads every job's
        state once (a KV watch of the `<job_id>` keys, not the results)."""
        kv = await self.kv(request_id)
        records: list[JobRecord] = []
        try:
            watcher: Any = await kv.watch("*", ignore_deletes=True)  # nats.py leaves KeyWatcher untyped
            try:
                while (entry := await watcher.updates(timeout=NATS_TIMEOUT_S)) is not None:
                    if entry.value:
                        record = _record_decoder.decode(entry.value)
                        if status is None or record.status == status:
                            records.append(record)
            finally:
                await watcher.stop()
        except Exception as exc:
            raise jetstream_unavailable(request_id, "list the jobs", exc) from None
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[:limit], len(records)

    async def queued_ahead(self, priority: Priority, request_id: str) -> int:
        """Jobs on the queues of `priority` and above (queued or running)."""
        info = await self._js(request_id).stream_info(subjects.JOBS_STREAM, subjects_filter=f"{subjects.JOBS_PREFIX}.>")
        counts = info.state.subjects or {}
        order = subjects.JOB_PRIORITIES
        return sum(counts.get(subjects.job_subject(p), 0) for p in order[: order.index(priority) + 1])

    def estimate_s(self, jobs: int) -> float:
        """Seconds until `jobs` jobs are done, at this gateway's mean run time and job concurrency."""
        return jobs * self.timing.mean_s / max(1, self.settings.job_concurrency)


def jetstream_unavailable(request_id: str, what: str, exc: BaseException) -> BridgeError:
    return unavailable(
        request_id,
        f"Could not {what} in NATS JetStream ({type(exc).__name__}: {str(exc)[:200]}). Is JetStream up? Retry shortly.",
    )
