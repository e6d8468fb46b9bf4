"""NATS accounts, users and their permissions: one table, rendered for every place a nats-server runs.

Every fraudmesh process connects as a user of the account `FRAUDMESH` (JetStream enabled there) and may only
publish and subscribe to what its role needs (least privilege). The same table becomes:
- the local nats-server config written by `fraudmesh up` and by the test suite (`server_config`), with
  passwords generated per run;
- deploy/compose/nats/nats-server.conf (`compose_config`, passwords from the environment);
- the `config.merge.accounts` of deploy/k8s/nats-values.yaml (`helm_accounts`, passwords from a Secret).
`python -m deploy.nats_auth write` rewrites the last two (`compose`, `helm` print them); tests/test_nats_auth.py
checks they are in step.

Passwords of a local run derive from one secret: the admin password is the secret, every other user's password
is an HMAC of it (whoever holds the admin password may do everything anyway; a service's password reveals
nothing else). A service uses the inbox prefix `_INBOX_<user>` and may only read its own inboxes, so no
service can read the replies meant for another; public clients keep the default `_INBOX`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared import subjects
from shared.nats_conn import inbox_prefix

ACCOUNT = "FRAUDMESH"
ADMIN = "admin"
PUBLIC = "public"
SERVICE_USERS = ("gateway", "aggregator", "inference", "feature")
"""Each service (the stack's names, deploy/stack.py SERVICE_MODULES) connects as the user of the same name."""
USERS = (ADMIN, *SERVICE_USERS, PUBLIC)

# JetStream names that live elsewhere: the ingest streams (feature_svc, live features) and the model registry
# buckets (inference_svc/registry.py: KV `fraudmesh_model_state`, object store `fraudmesh_models`).
TXNS_STREAM, TXNS_SUBJECT = "FRAUD_TXNS", "fraud.txns.ingest"
LABELS_STREAM, LABELS_SUBJECT = "FRAUD_LABELS", "fraud.labels.ingest"
CLICKS_STREAM, CLICKS_SUBJECT = "FRAUD_CLICKS", "fraud.clicks.ingest"
INGEST_DLQ_STREAM, INGEST_DLQ_SUBJECT = "FRAUD_INGEST_DLQ", "fraud.ingest.dlq"
MODEL_STATE_STREAM = "KV_fraudmesh_model_state"
MODELS_STREAM = "OBJ_fraudmesh_models"
JOBS_KV_STREAM = f"KV_{subjects.JOBS_BUCKET}"
CONFIG_STREAM = f"KV_{subjects.CONFIG_BUCKET}"
"""Runtime settings (shared/runtime_config.py): every service watches it; the gateway writes it (`POST /config`)."""
STREAMS = (subjects.PARTIALS_STREAM, subjects.DLQ_STREAM, TXNS_STREAM, LABELS_STREAM, CLICKS_STREAM, INGEST_DLQ_STREAM)
"""Streams the services declare idempotently at start (shared/jetstream.py)."""

API = "$JS.API"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: int = 1
    """How many messages it may send on the reply subject of each request it received (0: none). The aggregator
    sends two when asked (an "accepted by <instance>" notice, then the answer: gateway/inflight.py)."""

    def as_config(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"publish": {"allow": list(self.publish)}, "subscribe": {"allow": list(self.subscribe)}}
        if self.responses == 1:
            doc["allow_responses"] = True
        elif self.responses > 1:
            doc["allow_responses"] = {"max": self.responses}
        return doc


def _declare(*streams: str) -> list[str]:
    """Create (idempotently), update and inspect these streams; read no message."""
    return [f"{API}.STREAM.{op}.{s}" for s in streams for op in ("CREATE", "UPDATE", "INFO")]


def _pull(stream: str, consumer: str) -> list[str]:
    """Create/bind a durable pull consumer, fetch from it and ack its messages."""
    return [
        f"{API}.CONSUMER.CREATE.{stream}.{consumer}",
        f"{API}.CONSUMER.CREATE.{stream}.{consumer}.>",
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"{API}.CONSUMER.INFO.{stream}.{consumer}",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    ]


def _read_bucket(stream: str) -> list[str]:
    """Read a KV or object store bucket (get, watch, list: ordered consumers); create it empty if missing.
    Writing (`$KV.<bucket>.>`, `$O.<bucket>.>`) is the admin's."""
    return [
        *_declare(stream),
        f"{API}.STREAM.NAMES",  # nats.py finds the bucket's stream by subject (names only, no message)
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.INFO.{stream}.>",
        f"{API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _service(user: str, publish: list[str], subscribe: list[str]) -> Permissions:
    """What every service user gets besides its own: its inboxes, its health subject, service discovery
    (`$SRV`), pinging health, and answering the requests it receives."""
    return Permissions(
        publish=tuple(dict.fromkeys([*publish, f"{subjects.HEALTH_PREFIX}.>", "$SRV.>"])),
        subscribe=(*subscribe, f"{inbox_prefix(user)}.>", subjects.health_subject(user), "$SRV.>"),
    )


def _with_responses(n: int, perms: Permissions) -> Permissions:
    return Permissions(publish=perms.publish, subscribe=perms.subscribe, responses=n)


def permissions(user: str) -> Permissions:
    """The permissions of `user` (one of USERS)."""
    partials, consumer = subjects.PARTIALS_STREAM, subjects.INFERENCE_CONSUMER
    results = f"{subjects.RESULTS_PREFIX}.*"
    if user == ADMIN:  # the operator: model registry writes, stream management, the dead-letter queue
        return Permissions(publish=(">",), subscribe=(">",), responses=0)
    if user == PUBLIC:  # other systems: score and ingest, nothing else
        return Permissions(
            publish=(subjects.SCORE, subjects.PERSONALIZATION_SCORE, TXNS_SUBJECT, LABELS_SUBJECT, CLICKS_SUBJECT),
            subscribe=("_INBOX.>",),
            responses=0,
        )
    if user == "gateway":
        jobs = subjects.JOBS_STREAM
        return _service(
            user,
            [
                subjects.SCORE,
                subjects.PERSONALIZATION_SCORE,
                subjects.PERSONALIZATION_MODEL_INFO,
                subjects.FEATURES_GET,
                subjects.MODEL_INFO,
                subjects.MODEL_OPS,  # the admin routes and /feature-importance (one inference worker acts)
                subjects.MODEL_CONTROL,  # a load's hot swap everywhere, a rolling reload (every worker answers)
                TXNS_SUBJECT,
                LABELS_SUBJECT,
                CLICKS_SUBJECT,  # POST /events
                # async jobs (gateway/job_store.py, gateway/job_runner.py): queue, run and record them
                *(subjects.job_subject(p) for p in subjects.JOB_PRIORITIES),
                subjects.JOBS_DLQ_SUBJECT,
                *_declare(jobs, subjects.JOBS_DLQ_STREAM),
                *(rule for p in subjects.JOB_PRIORITIES for rule in _pull(jobs, subjects.job_consumer(p))),
                *_read_bucket(JOBS_KV_STREAM),
                f"$KV.{subjects.JOBS_BUCKET}.>",
                *_read_bucket(CONFIG_STREAM),
                f"$KV.{subjects.CONFIG_BUCKET}.{subjects.CONFIG_KEY}",  # POST /config
            ],
            [subjects.health_subject("jobs")],  # the job runner answers health pings as service `jobs`
        )
    if user == "aggregator":
        return _with_responses(
            2,
            _service(
                user,
                [
                    subjects.PARTIALS_SUBJECT,
                    subjects.DLQ_SUBJECT,
                    results,  # a dead-lettered partial's failure, to its own inbox
                    TXNS_SUBJECT,
                    *_declare(*STREAMS),
                    f"{API}.CONSUMER.CREATE.{partials}.{consumer}",
                    f"{API}.CONSUMER.CREATE.{partials}.{consumer}.>",
                    f"{API}.CONSUMER.DURABLE.CREATE.{partials}.{consumer}",
                    f"{API}.STREAM.MSG.GET.{partials}",  # a partial past max_deliver, to dead-letter it
                    f"{API}.STREAM.MSG.DELETE.{partials}",
                    *_read_bucket(CONFIG_STREAM),
                ],
                [
                    f"{subjects.SCORE} {subjects.QUEUE_AGGREGATOR}",
                    results,
                    subjects.max_deliveries_advisory(),
                ],
            ),
        )
    if user == "inference":
        return _service(
            user,
            [
                results,
                subjects.DLQ_SUBJECT,
                subjects.FEATURES_COMPUTE,
                *_declare(*STREAMS),
                *_pull(partials, consumer),
                *_read_bucket(MODEL_STATE_STREAM),
                *_read_bucket(MODELS_STREAM),
                *_read_bucket(CONFIG_STREAM),
                # fraud.model.ops (inference_svc/model_ops.py): a load writes `active`; a delete removes a
                # version's objects (meta rollup message, then a purge of its chunks)
                f"$KV.{subjects.MODEL_STATE_BUCKET}.active",
                f"$O.{subjects.MODEL_ARTIFACTS_BUCKET}.M.>",
                f"{API}.STREAM.PURGE.{MODELS_STREAM}",
            ],
            [
                subjects.MODEL_CONTROL,
                f"{subjects.MODEL_INFO} {subjects.QUEUE_INFERENCE}",
                f"{subjects.MODEL_OPS} {subjects.QUEUE_INFERENCE}",
                f"{subjects.PERSONALIZATION_SCORE} {subjects.QUEUE_INFERENCE}",
                f"{subjects.PERSONALIZATION_MODEL_INFO} {subjects.QUEUE_INFERENCE}",
                subjects.PERSONALIZATION_MODEL_CONTROL,
            ],
        )
    if user == "feature":
        return _service(
            user,
            [
                "features.compute.chunk",  # feature_svc/service.py COMPUTE_CHUNK: a big request shared out
                INGEST_DLQ_SUBJECT,  # an ingest message that cannot be applied
                *_declare(*STREAMS),
                *_pull(TXNS_STREAM, "*"),
                *_pull(LABELS_STREAM, "*"),
                *_pull(CLICKS_STREAM, "*"),
                *_read_bucket(CONFIG_STREAM),
            ],
            [f"features.> {subjects.QUEUE_FEATURES}"],
        )
    raise ValueError(f"unknown NATS user {user!r}; the users are {', '.join(USERS)}")


# --------------------------------------------------------------------------------------------- passwords


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def password(secret: str, user: str) -> str:
    """The password of `user` in a run whose admin password is `secret`."""
    if user == ADMIN:
        return secret
    digest = hmac.new(secret.encode(), f"fraudmesh-nats:{user}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def with_credentials(url: str, user: str, pw: str) -> str:
    """`url` (one or more, comma-separated) with `user:pw@` in each."""
    out = []
    for one in url.split(","):
        parts = urlsplit(strip_credentials(one))
        out.append(urlunsplit(parts._replace(netloc=f"{user}:{pw}@{parts.netloc}")))
    return ",".join(out)


def strip_credentials(url: str) -> str:
    """`url` without any `user:password@` (safe to log or print)."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one)
        out.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])) if "@" in parts.netloc else one)
    return ",".join(out)


def credentials_of(url: str) -> tuple[str, str]:
    """(user, password) embedded in the first URL of `url`, or ('', '')."""
    parts = urlsplit(url.split(",")[0])
    return parts.username or "", parts.password or ""


# ------------------------------------------------------------------------------------------- rendering


def accounts(password_of: Callable[[str], str]) -> dict[str, Any]:
    """The `accounts` block as data; `password_of(user)` gives each user's password value."""
    users = [{"user": u, "password": password_of(u), "permissions": permissions(u).as_config()} for u in USERS]
    return {ACCOUNT: {"jetstream": "enabled", "users": users}}


def _render(value: Any, indent: str = "") -> str:
    """nats-server config text (a superset of JSON); a string starting with `$` stays a variable reference."""
    inner = indent + "  "
    if isinstance(value, Mapping):
        body = "".join(f"{inner}{k}: {_render(v, inner)}\n" for k, v in value.items())
        return "{\n" + body + indent + "}"
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return "[" + ", ".join(_render(v) for v in value) + "]"
        return "[\n" + "".join(f"{inner}{_render(v, inner)}\n" for v in value) + indent + "]"
    if isinstance(value, str) and value.startswith("$") and "." not in value:
        return value
    if isinstance(value, str) and value == "enabled":
        return value
    return json.dumps(value)


def server_config(secret: str) -> str:
    """The accounts block of a local run (passwords in clear: the file is written 0600)."""
    return "accounts: " + _render(accounts(lambda u: password(secret, u))) + "\n"


def env_var(user: str) -> str:
    """The environment variable that holds `user`'s password in compose and Kubernetes."""
    return f"NATS_{user.upper()}_PASSWORD"


COMPOSE_HEADER = """\
# The fraudmesh NATS users and their least-privilege permissions, included by nats-server.conf (docker compose).
# GENERATED by `python -m deploy.nats_auth write` from deploy/nats_auth.py; do not edit.
# Passwords come from the environment of the nats container ($NATS_<USER>_PASSWORD, see docker-compose.yml).
"""


def compose_config() -> str:
    """deploy/compose/nats/accounts.conf."""
    return COMPOSE_HEADER + "accounts: " + _render(accounts(lambda u: "$" + env_var(u))) + "\n"


def helm_accounts() -> dict[str, Any]:
    """For `config.merge.accounts` of the NATS helm chart (`<< $VAR >>` is the chart's raw-value syntax)."""
    return accounts(lambda u: f"<< ${env_var(u)} >>")


ROOT = Path(__file__).resolve().parent.parent
COMPOSE_ACCOUNTS = ROOT / "deploy" / "compose" / "nats" / "accounts.conf"
HELM_VALUES = ROOT / "deploy" / "k8s" / "nats-values.yaml"


def write_deploy_files() -> None:
    """Rewrite deploy/compose/nats/accounts.conf and the `accounts:` block under config.merge of
    deploy/k8s/nats-values.yaml from the table above (the rest of the values file is kept as it is)."""
    import textwrap

    import yaml

    COMPOSE_ACCOUNTS.write_text(compose_config())
    text = HELM_VALUES.read_text()
    start, end = text.index("\n    accounts:\n") + 1, text.index("\ncontainer:")
    block = yaml.safe_dump({"accounts": helm_accounts()}, sort_keys=False, width=120)
    HELM_VALUES.write_text(text[:start] + textwrap.indent(block, "    ") + text[end:])


def main(argv: list[str]) -> int:
    if argv == ["write"]:
        write_deploy_files()
        print(f"wrote {COMPOSE_ACCOUNTS.relative_to(ROOT)} and the accounts of {HELM_VALUES.relative_to(ROOT)}")
        return 0
    if argv == ["compose"]:
        print(compose_config(), end="")
        return 0
    if argv == ["helm"]:
        import yaml

        print(yaml.safe_dump({"accounts": helm_accounts()}, sort_keys=False, width=120), end="")  # under merge:
        return 0
    print("usage: python -m deploy.nats_auth write|compose|helm", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
