"""Async scoring jobs (seed 004): `POST /predict/async`, `GET /jobs/{job_id}`, `GET /jobs`.

A job is accepted (202) once its state is in the KV bucket and its transactions are on the FRAUD_JOBS work queue
(gateway/job_store.py); a job runner in some gateway scores it later through `fraud.score`, highest priority
first (gateway/job_runner.py). Any gateway answers for any job; an unknown or expired id answers 404.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter

from gateway.bridge import BridgeError
from gateway.compression import GZIP
from gateway.controllers.models import READ_ONLY
from gateway.controllers.score import IngestParam
from gateway.dependencies import Gateway
from gateway.envelope import at, check_count, decode_envelope, decode_transactions, json_body
from gateway.job_runner import Jobs
from gateway.job_schemas import ASYNC_EXAMPLE, AsyncPredictRequest, JobAccepted, JobList, JobSummary, JobView
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.schemas import PredictResponse, StrictTransaction
from gateway.validation import BodyError, echo
from shared.job_messages import FINISHED, JobMessage, JobRecord, JobStatus
from shared.messages import ErrorReply, FieldError

_async_decoder = msgspec.json.Decoder(AsyncPredictRequest[msgspec.Raw])
_result_decoder = msgspec.json.Decoder(PredictResponse)


def iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _eta(record: JobRecord, mean_s: float, now: float) -> float | None:
    if record.status in FINISHED:
        return None
    if record.status == "running" and record.started_at is not None:
        return round(max(0.0, record.started_at + mean_s - now), 3)
    return round(max(0.0, record.created_at + record.eta_s - now), 3)


def not_found(job_id: str, request_id: str, ttl_s: float) -> BridgeError:
    return BridgeError(
        ErrorReply(
            code="not_found",
            request_id=request_id,
            message=f"No job {echo(job_id)}: the id is unknown, or the job expired (jobs are kept {ttl_s:g} s "
            "after their last change). Submit it again with POST /predict/async.",
        )
    )


class JobsController(Controller):
    tags = ["jobs"]

    @post(
        "/predict/async",
        operation_id="predictAsync",
        operation_class=body_operation_of(AsyncPredictRequest[StrictTransaction], ASYNC_EXAMPLE),
        summary="Submit an async scoring job (seed 004): 202 with the job id; poll GET /jobs/{job_id}",
        status_code=202,
        responses=error_responses(400, 401, 413, 415, 429, 503),
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        gateway: Gateway,
        jobs: Jobs,
        request_id: str,
        ingest: IngestParam = True,
    ) -> Response[JobAccepted]:
        """The transactions are validated now, exactly as `POST /predict` validates them (a bad one is a 400 naming
        its field, and nothing is queued); they are scored later by a job runner, a queued `high` job before any
        queued `normal` one, a `normal` before any `low`. The result, shaped as `POST /predict`'s reply, is kept
        for FRAUDMESH_JOB_TTL_S (default 1 h) after the job finishes."""
        settings = gateway.settings
        body = decode_envelope(await json_body(request), _async_decoder)
        check_count(len(body.transactions), settings.max_batch_size)
        txs = decode_transactions(body.transactions, at("$.transactions"), settings.card_ids_are_tokens)
        if body.timeout_ms is not None and body.timeout_ms > settings.max_request_timeout_ms:
            raise BodyError(
                [
                    FieldError(
                        path="$.timeout_ms",
                        message=f"At most {settings.max_request_timeout_ms} ms, got {body.timeout_ms:g}.",
                    )
                ],
                "The request body is invalid: 1 problem; see `errors`.",
            )
        job_id = uuid.uuid4().hex
        job = JobMessage(
            job_id=job_id,
            request_id=body.request_id or job_id,
            priority=body.priority,
            transactions=txs,
            timeout_ms=body.timeout_ms or float(settings.request_timeout_ms),
            ingest=ingest,
        )
        record = await jobs.store.submit(job)
        location = f"/jobs/{job_id}"
        out = JobAccepted(
            job_id=job_id,
            status=record.status,
            priority=record.priority,
            eta_seconds=record.eta_s,
            created_at=iso(record.created_at),
            location=location,
            timestamp=iso(time.time()),
        )
        return Response(out, status_code=202, headers={"X-Request-Id": request_id, "Location": location})


class JobReadsController(Controller):
    """`GET /jobs/{job_id}` and `GET /jobs`: read-only (a lenient request id), gzipped for clients that accept it."""

    dependencies = READ_ONLY
    middleware = [GZIP]
    tags = ["jobs"]

    @get(
        "/jobs/{job_id:str}",
        operation_id="getJob",
        summary="An async job: pending, running, completed (with its result) or failed (with the error)",
        responses=error_responses(401, 404, 429, 503),
    )
    async def job(
        self,
        jobs: Jobs,
        request_id: str,
        job_id: Annotated[str, Parameter(description="The job id `POST /predict/async` answered.")],
    ) -> JobView:
        """404 for an id that is unknown or has expired (FRAUDMESH_JOB_TTL_S after the job's last change)."""
        record = await jobs.store.get(job_id, request_id)
        if record is None:
            raise not_found(job_id, request_id, jobs.settings.job_ttl_s)
        result = None
        if record.status == "completed":
            raw = await jobs.store.result(job_id, request_id)
            if raw is None:
                raise not_found(job_id, request_id, jobs.settings.job_ttl_s)
            result = _result_decoder.decode(raw)
        now = time.time()
        return JobView(
            job_id=record.job_id,
            status=record.status,
            priority=record.priority,
            request_id=record.request_id,
            transactions=record.transactions,
            created_at=iso(record.created_at),
            started_at=iso(record.started_at) if record.started_at is not None else None,
            finished_at=iso(record.finished_at) if record.finished_at is not None else None,
            age_seconds=round(max(0.0, now - record.created_at), 3),
            attempts=record.attempts,
            eta_seconds=_eta(record, jobs.store.timing.mean_s, now),
            result=result,
            error=record.error,
            timestamp=iso(now),
        )

    @get(
        "/jobs",
        operation_id="listJobs",
        summary="The async jobs, newest first, optionally of one status",
        responses=error_responses(400, 401, 429, 503),
    )
    async def list_jobs(
        self,
        jobs: Jobs,
        request_id: str,
        status: Annotated[
            JobStatus | None, Parameter(description="Only jobs with this status (default: every status).")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=100, description="Most jobs to list (1 to 100).")] = 20,
    ) -> JobList:
        """Every unexpired job of every gateway (they share the KV bucket); `total_count` counts them all."""
        records, total = await jobs.store.list(status, limit, request_id)
        now = time.time()
        return JobList(
            jobs=[
                JobSummary(
                    job_id=r.job_id,
                    status=r.status,
                    priority=r.priority,
                    transactions=r.transactions,
                    created_at=iso(r.created_at),
                    age_seconds=round(max(0.0, now - r.created_at), 3),
                )
                for r in records
            ],
            total_count=total,
            timestamp=iso(now),
        )


def jobs_dependency(jobs: Jobs) -> dict[str, Provide]:
    def provide_jobs() -> Jobs:
        return jobs

    return {"jobs": Provide(provide_jobs, use_cache=True, sync_to_thread=False)}
