"""Async scoring jobs (seed 004's `POST /predict/async`): the work-queue message and the state kept in NATS KV.

- `JobMessage` (msgpack) is the job on the FRAUD_JOBS work queue, on the subject of its priority
  (`fraud.jobs.high|normal|low`), with `Nats-Msg-Id` = the job id. It carries the transactions.
- `JobRecord` (JSON, readable with `nats kv get fraudmesh_jobs <job_id>`) is the job's state under the key
  `<job_id>` of the KV bucket `fraudmesh_jobs`; its result, shaped as `POST /predict`'s reply, is under
  `<job_id>.result`. Both expire FRAUDMESH_JOB_TTL_S after their last write.

Schema rules as in shared/messages.py: new fields get defaults, a field's type never changes and is never renamed
or reused, unknown fields are ignored, and the message carries a `type` tag.
"""

from __future__ import annotations

import re
from typing import Literal

from msgspec import Struct

from shared.messages import ErrorReply, Transaction

Priority = Literal["high", "normal", "low"]
JobStatus = Literal["pending", "running", "completed", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "running", "completed", "failed")
FINISHED: tuple[JobStatus, ...] = ("completed", "failed")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
"""A job id is 32 lowercase hex digits (a UUID4 without dashes): safe as a KV key and a message id."""


class JobMessage(Struct, tag="job", tag_field="type", kw_only=True, omit_defaults=True):
    """One async job on the work queue: score `transactions` as `POST /predict` would."""

    job_id: str
    request_id: str
    """The scoring request's id (the client's `request_id`, or the job id): transactions without an id get
    `{request_id}-{i}`, the same on every run, so a job run twice is ingested once."""
    priority: Priority
    transactions: list[Transaction]
    timeout_ms: float
    """Deadline of one run of the job's scoring, from the moment it starts."""
    ingest: bool = True


class JobRecord(Struct, kw_only=True, omit_defaults=True):
    """The state of a job (KV `fraudmesh_jobs`, key `<job_id>`). Times are Unix epoch seconds."""

    job_id: str
    status: JobStatus
    priority: Priority
    request_id: str
    transactions: int
    timeout_ms: float
    created_at: float
    eta_s: float = 0.0
    """The estimate given when the job was accepted: seconds from `created_at` to its end."""
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    """Runs started (more than 1 after a retry or a gateway that died while running it)."""
    runner: str = ""
    """The job runner (gateway instance) that ran it last."""
    error: ErrorReply | None = None
    """Why it failed (status `failed`), or the last retryable error while it waits for another run."""
