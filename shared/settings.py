"""Settings from environment variables: one typed table, checked at start with a clear error.

Every field of `Settings` is read from `FRAUDMESH_<FIELD NAME IN UPPER CASE>`. `docs/settings.md` is generated
from this class (`fraudmesh settings`), and a test keeps the two in step.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta, Struct

PREFIX = "FRAUDMESH_"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]


def _doc(text: str) -> Meta:
    return Meta(description=text)


class Settings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # --- connections -------------------------------------------------------------------------------
    nats_url: Annotated[str, _doc("NATS server URL(s), comma-separated for a cluster.")] = "nats://127.0.0.1:4222"
    redis_url: Annotated[str, _doc("Redis online feature store URL.")] = "redis://127.0.0.1:6379/0"
    postgres_dsn: Annotated[str, _doc("PostgreSQL ledger DSN.")] = "postgresql://fraudmesh@127.0.0.1:5432/fraudmesh"
    nats_user: Annotated[
        str,
        _doc(
            "NATS user (each service has its own, with least-privilege permissions: docs/nats-api.md); empty "
            "connects without credentials or with those in the URL."
        ),
    ] = ""
    nats_password: Annotated[str, _doc("Password of the NATS user (a secret; never logged).")] = ""
    nats_tls_ca: Annotated[
        str, _doc("CA certificate file (PEM) to verify the NATS server; empty uses the system's CAs.")
    ] = ""
    nats_tls_cert: Annotated[str, _doc("Client certificate file (PEM) for NATS TLS (mutual TLS); optional.")] = ""
    nats_tls_key: Annotated[str, _doc("Private key file (PEM) of the client certificate.")] = ""
    graph_store: Annotated[
        Literal["postgres", "neo4j"], _doc("Graph store implementation: `postgres` (embedded) or `neo4j`.")
    ] = "postgres"
    neo4j_uri: Annotated[str, _doc("Neo4j bolt URI, used when graph_store=neo4j.")] = ""
    neo4j_user: Annotated[str, _doc("Neo4j user.")] = "neo4j"
    neo4j_password: Annotated[str, _doc("Neo4j password (a secret; never logged).")] = ""

    # --- identity and observability ---------------------------------------------------------------
    instance_id: Annotated[str, _doc("Unique id of this process; generated when empty.")] = ""
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], _doc("Log level of the JSON logs on stderr.")
    ] = "INFO"
    metrics_port: Annotated[
        Port,
        _doc(
            "Prometheus metrics port (/metrics, /healthz, /readyz) of this process; 0 disables. The gateway also "
            "serves /metrics on its HTTP port, which several gateways sharing one port (http_reuse_port) cannot tell "
            "apart: scrape each on its own metrics port."
        ),
    ] = 0

    # --- gateway -----------------------------------------------------------------------------------
    http_host: Annotated[str, _doc("Gateway bind address.")] = "127.0.0.1"
    http_port: Annotated[Port, _doc("Gateway HTTP port.")] = 8000
    http_reuse_port: Annotated[
        bool,
        _doc(
            "Bind the gateway's port with SO_REUSEPORT, so several gateway processes on one host share it and the "
            "kernel spreads new connections over them (`fraudmesh up --gateways N` sets it). Off, a second "
            "process on a taken port fails to start."
        ),
    ] = False
    api_keys: Annotated[
        str, _doc("Comma-separated API keys accepted in `X-API-Key`; empty disables auth (local dev).")
    ] = ""
    admin_api_keys: Annotated[
        str,
        _doc(
            "Comma-separated keys for admin routes (an API key never grants admin rights); empty: admin routes are "
            "open only while `FRAUDMESH_API_KEYS` is empty too."
        ),
    ] = ""
    rate_limit_per_second: Annotated[
        int,
        Meta(ge=0),
        _doc(
            "Requests per second per API key (or per client address without one) on the API routes, counted in "
            "Redis and shared by every gateway replica; 0 disables."
        ),
    ] = 0
    trusted_proxies: Annotated[
        str,
        _doc(
            "Comma-separated addresses (or `*`) of reverse proxies whose `X-Forwarded-For` names the client; empty: "
            "the header is ignored and the peer address is the client."
        ),
    ] = ""
    card_ids_are_tokens: Annotated[
        bool,
        _doc(
            "`false`: a `card_id` of 13-19 digits passing the Luhn check is refused as a card number (send a token). "
            "`true` when your card ids are tokens that may look like one."
        ),
    ] = False
    max_partials_per_request: Annotated[
        Positive, _doc("Most partials one request may be cut into (a smaller `partial_size` gets 400).")
    ] = 100
    cors_origins: Annotated[str, _doc("Comma-separated CORS origins; empty disables CORS.")] = ""

    # --- request lifecycle -------------------------------------------------------------------------
    request_timeout_ms: Annotated[Positive, _doc("Default deadline of a scoring request, end to end, in ms.")] = 5000
    max_request_timeout_ms: Annotated[Positive, _doc("Largest deadline a client may ask for, in ms.")] = 60000
    max_batch_size: Annotated[Positive, _doc("Most transactions in one request; more gets 413.")] = 10000
    partial_size: Annotated[Positive, _doc("Transactions per partial batch on the work queue.")] = 200
    coalesce_window_ms: Annotated[
        float,
        Meta(ge=0),
        _doc("Aggregator: how long small requests wait to share one partial (dynamic batching); 0 disables."),
    ] = 2.0
    handler_concurrency: Annotated[Positive, _doc("Messages each request-reply handler runs at once.")] = 256
    degraded_policy: Annotated[
        Literal["flag", "review", "fail"],
        _doc(
            "What a caller gets when a score was built without some of its inputs (feature store or service down): "
            "`flag` (scored, `degraded: true` with the reasons), `review` (flagged, and the recommended action is "
            "at least `review`) or `fail` (no score: 503 / `unavailable`, retryable, with the reasons)."
        ),
    ] = "flag"
    gateway_max_in_flight: Annotated[
        Positive, _doc("Admission control: requests one gateway process scores at once; more get 503 + Retry-After.")
    ] = 256
    gateway_max_in_flight_transactions: Annotated[
        Positive, _doc("Admission control: transactions one gateway process has in flight at once.")
    ] = 20000
    admission_max_queue_ms: Annotated[
        float,
        Meta(gt=0),
        _doc(
            "Admission control: a request whose estimated wait (work in flight / recent throughput) exceeds this, "
            "or half its own remaining deadline, is refused at once with 503 + Retry-After; so is a POST that "
            "waited this long in the gateway before it was read. Admitted requests then take about this long plus "
            "their own scoring: keep it well below the answer time clients wait for."
        ),
    ] = 200.0
    admission_queue_target_ms: Annotated[
        float,
        Meta(gt=0),
        _doc(
            "Admission control: how long a request may wait in the gateway (from when its bytes are read to when "
            "the app sees it) before a standing queue counts as overload. While even the shortest wait of a 100 ms "
            "interval exceeds it, POST requests that waited more than twice this are refused at once (503 + "
            "Retry-After) before their body is parsed."
        ),
    ] = 50.0
    idempotency_enabled: Annotated[
        bool,
        _doc(
            "Gateway: a transaction id scored within `idempotency_window_s` gets its stored decision back (a "
            "different body under that id: 409; `?rescore=true` scores anew). Stored in Redis, shared by every "
            "gateway; `false` scores every request anew."
        ),
    ] = True
    idempotency_window_s: Annotated[
        float, Meta(gt=0), _doc("Gateway: how long a transaction id's decision is kept for idempotent replays, in s.")
    ] = 86400.0
    aggregator_max_in_flight_transactions: Annotated[
        Positive,
        _doc("Admission control: transactions one aggregator has in flight; more are refused (`unavailable`)."),
    ] = 40000

    # --- async jobs (POST /predict/async) --------------------------------------------------------
    job_ttl_s: Annotated[
        float,
        Meta(gt=0),
        _doc(
            "Async jobs: a job's state and result are kept this long after their last change (KV `fraudmesh_jobs` "
            "max age), then GET /jobs/{id} answers 404; a job still queued after this long is dropped unrun."
        ),
    ] = 3600.0
    job_concurrency: Annotated[
        int,
        Meta(ge=0, le=256),
        _doc(
            "Async jobs each gateway process runs at once (highest priority first); 0: this gateway accepts jobs "
            "but runs none (other gateways do)."
        ),
    ] = 4
    job_ack_wait_s: Annotated[
        float,
        Meta(gt=0),
        _doc(
            "Async jobs: a job whose gateway died while running it is run again by another (or the restarted) "
            "gateway after this long (JetStream ack wait; a running job is kept alive by heartbeats)."
        ),
    ] = 30.0
    job_max_deliver: Annotated[
        Positive,
        _doc("Async jobs: runs of one job (retries after a service was down or the gateway died) before it fails."),
    ] = 5
    job_poll_max_ms: Annotated[
        float,
        Meta(gt=0),
        _doc(
            "Async jobs: longest pause of an idle job runner between looks at the queues (a job submitted to the "
            "same gateway starts at once; one submitted elsewhere within this)."
        ),
    ] = 500.0

    # --- inference ---------------------------------------------------------------------------------
    model_dir: Annotated[str, _doc("Directory of model artifacts (`<version>/model.onnx` + metadata).")] = "var/models"
    model_version: Annotated[str, _doc("Model version to load; empty loads the directory's `active` one.")] = ""
    inference_concurrency: Annotated[Positive, _doc("Partials one inference worker scores at once.")] = 4
    personalization_model_dir: Annotated[
        str,
        _doc(
            "Directory of the personalization family's models (`<version>/model.onnx`, `ids.json`, metadata; "
            "`active` names the one served); empty: `<model_dir>-personalization`. Without a model there, "
            "`personalization.score` answers `unavailable` and fraud scoring is unaffected."
        ),
    ] = ""
    onnx_threads: Annotated[Positive, _doc("onnxruntime intra-op threads per inference worker.")] = 1
    ack_wait_s: Annotated[
        float, Meta(gt=0), _doc("JetStream ack wait: an unacked partial is redelivered after this.")
    ] = 3.0
    max_deliver: Annotated[Positive, _doc("Deliveries of a partial before it is dead-lettered.")] = 4
    stream_replicas: Annotated[
        int, Meta(ge=1, le=5), _doc("Replicas of the JetStream streams (3 on a 3-node cluster; 1 locally).")
    ] = 1
    partials_max_age_s: Annotated[
        float, Meta(gt=0), _doc("Partials older than this are dropped from the work queue.")
    ] = 300.0
    chaos_inference_delay_ms: Annotated[
        float, Meta(ge=0), _doc("Failure drills only: extra delay per partial in inference workers.")
    ] = 0.0

    # --- features ----------------------------------------------------------------------------------
    feature_ttl_s: Annotated[Positive, _doc("TTL of a feature HASH in Redis, in seconds.")] = 86400
    feature_max_age_s: Annotated[
        float, Meta(gt=0), _doc("Scoring path: entity features older than this are recomputed (freshness SLA).")
    ] = 300.0
    entity_features: Annotated[
        Literal["auto", "always", "off"],
        _doc(
            "Scoring path route 1 (Redis, then features.compute): `auto` when the model uses entity features, "
            "`always`, or `off`."
        ),
    ] = "auto"

    # --- live ingestion ----------------------------------------------------------------------------
    ingest_dedupe_window_s: Annotated[
        float, Meta(gt=0), _doc("FRAUD_TXNS/FRAUD_LABELS: a re-published transaction id within this is dropped.")
    ] = 120.0
    ingest_max_age_s: Annotated[
        float, Meta(gt=0), _doc("FRAUD_TXNS/FRAUD_LABELS keep messages this long (the ledger keeps them for good).")
    ] = 7 * 24 * 3600.0
    ingest_max_bytes: Annotated[
        int, Meta(ge=-1), _doc("FRAUD_TXNS/FRAUD_LABELS size limit each, in bytes (oldest dropped); -1 unlimited.")
    ] = 1 << 30
    ingest_batch_size: Annotated[
        Positive,
        _doc(
            "Feature workers: most stream messages in one ingest micro-batch (a backlog drains in full batches: "
            "an entity touched k times in one batch is recomputed once)."
        ),
    ] = 2000
    ingest_max_wait_ms: Annotated[
        float, Meta(gt=0), _doc("Feature workers: longest wait to fill an ingest micro-batch, in ms.")
    ] = 50.0
    ingest_linger_ms: Annotated[
        float,
        Meta(ge=0),
        _doc(
            "Feature workers: after a fetch that did not fill an ingest micro-batch, wait this long (ms) and take "
            "what arrived meanwhile: steady traffic is applied in fewer, bigger batches (less CPU per "
            "transaction, more freshness latency); 0 off."
        ),
    ] = 100.0
    ingest_concurrency: Annotated[
        Positive,
        _doc(
            "Feature workers: FRAUD_TXNS micro-batches one worker applies at once (their ledger writes run "
            "side by side, their feature refreshes are merged into shared rounds)."
        ),
    ] = 4
    ingest_refresh_interval_ms: Annotated[
        float,
        Meta(ge=0, le=500),
        _doc(
            "Feature workers: the online-feature refresh rounds of ingestion start at most this often (ms); each "
            "recomputes the entities of every micro-batch that arrived since the previous round began (an entity "
            "touched by several batches once); 0: a round starts as soon as the previous one ends."
        ),
    ] = 100.0
    ingest_entity_refresh_interval_ms: Annotated[
        float,
        Meta(ge=0, le=800),
        _doc(
            "Feature workers: one entity's online features are recomputed by ingestion at most this often (ms): a "
            "busy merchant touched by every micro-batch waits for the next round after this; adds up to this much "
            "to the freshness of the 1-second features of such entities (measured by "
            "fraudmesh_feature_freshness_seconds); 0: every round."
        ),
    ] = 300.0
    ingest_enabled: Annotated[bool, _doc("Feature workers consume FRAUD_TXNS/FRAUD_LABELS; false turns it off.")] = True
    consistency_check_interval_s: Annotated[
        float, Meta(ge=0), _doc("Feature workers: seconds between consistency samples (online vs ledger); 0 off.")
    ] = 60.0


def _env_name(field: str) -> str:
    return PREFIX + field.upper()


class SettingsError(ValueError):
    """A setting is wrong. The message names the variable, its value and what it must be."""


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    env = os.environ if environ is None else environ
    names = {f.name for f in msgspec.structs.fields(Settings)}
    unknown = sorted(
        k for k in env if k.startswith(PREFIX) and k[len(PREFIX) :].lower() not in names and k != PREFIX + "HOME"
    )
    if unknown:
        raise SettingsError(
            f"Unknown setting(s) {', '.join(unknown)}. Known settings are listed in docs/settings.md "
            f"(or run `fraudmesh settings`)."
        )
    raw: dict[str, object] = {n: env[_env_name(n)] for n in names if _env_name(n) in env}
    raw.update(overrides)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = re.search(r"at `\$\.(\w+)`", msg)
        if m:
            field = m.group(1)
            value = raw.get(field)
            raise SettingsError(
                f"Invalid setting {_env_name(field)}={value!r}: {msg.split(' - at ')[0]}. "
                f"See docs/settings.md for the allowed values."
            ) from None
        raise SettingsError(f"Invalid settings: {msg}") from None


def parse_cli(prog: str, description: str, argv: list[str] | None = None) -> None:
    """The command line of a `python -m <service>`: no arguments, only `--help`, which prints the usage and exits 0
    (instead of starting the service). Anything else exits 2 with a message."""
    argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Every setting comes from a FRAUDMESH_* environment variable: see docs/settings.md or run "
        "`fraudmesh settings`.",
    ).parse_args(argv)


def settings_table() -> str:
    """The Markdown table of every setting, for docs/settings.md."""
    defaults = Settings()
    rows = [
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    hints = Settings.__annotations__
    for f in msgspec.structs.fields(Settings):
        ann = hints[f.name]
        desc = ""
        typ = str(ann)
        for meta in getattr(_resolve(f.type), "__metadata__", ()):
            if isinstance(meta, Meta) and meta.description:
                desc = meta.description
        typ = _type_name(f.type)
        default = getattr(defaults, f.name)
        rows.append(f"| `{_env_name(f.name)}` | {typ} | `{default}` | {desc} |")
    return "\n".join(rows) + "\n"


def _resolve(tp: object) -> object:
    return tp


def _type_name(tp: object) -> str:
    origin = getattr(tp, "__origin__", None)
    if origin is not None and hasattr(tp, "__metadata__"):
        return _type_name(origin)
    if getattr(tp, "__origin__", None) is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))
