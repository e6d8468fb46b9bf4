"""One trace per request across every NATS hop, exported over OTLP/HTTP to an in-process receiver.

The services run as real processes on a nats-server of the test's own, with OTEL_EXPORTER_OTLP_ENDPOINT pointed
at `tests.otlp_receiver.OtlpReceiver`. The test sends the HTTP request with a W3C `traceparent` of its own, so it
knows the trace id and the id of the (unexported) client span that must be the gateway span's parent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from litestar import Litestar, get
from litestar.testing import TestClient
from nats.aio.msg import Msg

from deploy.demo import sample_batch
from deploy.servers import Server, port_is_free
from gateway.telemetry import UNTRACED_PATHS, otel_plugins
from shared import subjects
from shared.messages import Codec, ScoreReply, ScoreRequest, Transaction
from shared.telemetry import MODEL_FAMILY, inject
from tests.otlp_receiver import OtlpReceiver, SpanRecord
from tests.stacks import Stack
from trainer.personalization.bootstrap import train_bootstrap

GATEWAY, AGGREGATOR, INFERENCE, FEATURE = (
    "fraudmesh-gateway",
    "fraudmesh-aggregator",
    "fraudmesh-inference",
    "fraudmesh-feature",
)
N_TX = 1000
N_PARTIALS = 5  # 1000 transactions in partials of 200 (the default)


def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Service processes inherit this process's environment: no OTEL_* setting of the caller's may leak in
    (an OTEL_EXPORTER_OTLP_TRACES_ENDPOINT would win over ours, OTEL_SERVICE_NAME would rename every service)."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def assert_messaging(s: SpanRecord, operation: str, destination: str) -> None:
    """OpenTelemetry messaging semantic conventions on a NATS span."""
    assert s.attributes.get("messaging.system") == "nats", str(s)
    assert s.attributes.get("messaging.operation.type") == operation, str(s)
    assert s.attributes.get("messaging.destination.name") == destination, str(s)
    assert s.name == f"{operation} {destination}", str(s)


def _dump(spans: list[SpanRecord]) -> str:
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    lines = []
    for tid, group in by_trace.items():
        lines.append(f"trace {tid}: {len(group)} span(s)")
        lines += [f"  {s}" for s in sorted(group, key=lambda s: s.start_ns)[:40]]
    return "\n".join(lines) or "(no spans at all)"


@pytest.fixture
def make_stack(tmp_path: Path, isolated_nats: Server, redis_url: str, postgres_dsn: str, model_dir: Path):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []

    def make(env: dict[str, str]) -> Stack:
        s = Stack(tmp_path / f"stack{len(stacks)}", isolated_nats.extra["url"], redis_url, postgres_dsn, model_dir, env)
        stacks.append(s)
        s.start_all(inference=2)
        return s

    yield make
    for s in stacks:
        s.stop()


def _predict(stack: Stack, traceparent: str) -> dict[str, object]:
    r = httpx.post(
        # a generous deadline: the first request computes every entity's features cold, with tracing on, and
        # took 3-5 s on a loaded 2-core machine (the default deadline is 5 s)
        f"{stack.gateway_url}/predict?timeout_ms=20000",
        json={"transactions": sample_batch(N_TX, seed=5)},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["complete"] is True
    assert len(doc["partials"]) == N_PARTIALS
    return doc


# ------------------------------------------------------------------------------------ one trace, every hop
def test_one_trace_holds_gateway_aggregator_inference_spans_linked_across_nats(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _clean_otel_env(monkeypatch)
    with OtlpReceiver() as rx:
        # entity features always on: the feature service is on the scoring path (route 1), so it is in the trace
        stack = make_stack(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "FRAUDMESH_ENTITY_FEATURES": "always",
            }
        )
        trace_id, client_span_id, traceparent = _traceparent()
        _predict(stack, traceparent)

        def complete(spans: list[SpanRecord]) -> bool:
            # Spans arrive in batches per process and a parent ends (and is exported) after its children, so
            # wait until every expected span is in AND every parent has arrived (one root: the gateway's span).
            names = Counter(s.name for s in spans)
            ids = {s.span_id for s in spans}
            return (
                {GATEWAY, AGGREGATOR, INFERENCE, FEATURE} <= {s.service for s in spans}
                and names["process fraud.partials"] >= N_PARTIALS
                and names["onnx score"] >= N_PARTIALS
                and sum(1 for s in spans if s.parent_span_id not in ids) <= 1
            )

        spans = rx.wait_for(complete, timeout=20.0, trace_id=trace_id)
        everything = rx.spans()
        assert not rx.rejected, rx.rejected
        assert everything, "the services exported no span at all to the receiver; is OTLP export set up?"
        services = {s.service for s in spans}
        assert GATEWAY in services, (
            "no gateway span in the request's trace: is Litestar's OpenTelemetry plugin wired into create_app "
            f"(plugins=otel_plugins(settings))?\n{_dump(everything)}"
        )
        assert {AGGREGATOR, INFERENCE, FEATURE} <= services, _dump(everything)

        by_id = {s.span_id: s for s in spans}
        assert len(by_id) == len(spans), "duplicate span ids"

        # exactly one span's parent is outside the trace: the gateway's server span, child of our client span
        roots = [s for s in spans if s.parent_span_id not in by_id]
        assert len(roots) == 1, "orphans or several roots:\n" + "\n".join(map(str, roots))
        root = roots[0]
        assert (root.service, root.kind, root.name) == (GATEWAY, "SERVER", "POST /predict"), str(root)
        assert root.parent_span_id == client_span_id
        assert root.attributes.get(MODEL_FAMILY) == "fraud", str(root)

        def parent(s: SpanRecord) -> SpanRecord:
            return by_id[s.parent_span_id]

        # gateway -> NATS fraud.score -> aggregator
        consumers = [s for s in spans if s.service == AGGREGATOR and s.name == "process fraud.score"]
        assert len(consumers) == 1, _dump(spans)
        consumer = consumers[0]
        assert consumer.kind == "CONSUMER"
        assert_messaging(consumer, "process", "fraud.score")
        assert parent(consumer).service == GATEWAY

        # the split, and one publish span per partial under it
        splits = [s for s in spans if s.name == "aggregator split"]
        assert len(splits) == 1 and splits[0].service == AGGREGATOR
        split = splits[0]
        assert parent(split).span_id == consumer.span_id
        assert split.attributes.get("fraudmesh.partials") == N_PARTIALS
        publishes = {s.span_id: s for s in spans if s.name == "publish fraud.partials"}
        assert sorted(s.attributes["fraudmesh.partial"] for s in publishes.values()) == list(range(N_PARTIALS))
        assert all(s.service == AGGREGATOR and s.parent_span_id == split.span_id for s in publishes.values())
        for s in publishes.values():
            assert s.kind == "PRODUCER"
            assert_messaging(s, "publish", "fraud.partials")
            assert s.attributes["messaging.message.id"].endswith(f":{s.attributes['fraudmesh.partial']}")

        # aggregator -> JetStream FRAUD_PARTIALS -> inference: each partial's span is a child of its publish span
        partials = [s for s in spans if s.name == "process fraud.partials"]
        assert all(s.service == INFERENCE and s.kind == "CONSUMER" for s in partials)
        for s in partials:
            assert_messaging(s, "process", "fraud.partials")
            assert (
                s.attributes["messaging.message.id"] == publishes[s.parent_span_id].attributes["messaging.message.id"]
            )
            assert s.attributes["messaging.consumer.group.name"] == "inference"
        assert all(s.parent_span_id in publishes for s in partials), "\n".join(map(str, partials))
        assert {s.parent_span_id for s in partials} == set(publishes), "a partial was scored outside the trace"

        # ONNX inference inside each partial
        onnx = [s for s in spans if s.name == "onnx score"]
        assert len(onnx) >= N_PARTIALS
        assert all(s.service == INFERENCE and parent(s).name == "process fraud.partials" for s in onnx)
        # every hop that scores says for which model family
        labelled = [consumer, *publishes.values(), *partials, *onnx]
        assert all(s.attributes.get(MODEL_FAMILY) == "fraud" for s in labelled), _dump(labelled)

        # route 1: the Redis read of each partial, and features.compute -> feature service, under its partial
        reads = [s for s in spans if s.name == "redis read features"]
        assert len(reads) >= N_PARTIALS and all(parent(s).name == "onnx score" for s in reads)
        requests = {s.span_id: s for s in spans if s.name == "publish features.compute"}
        assert all(s.kind == "PRODUCER" for s in requests.values())
        assert requests, "no features.compute call in the trace (new entities must be computed)"
        computes = [s for s in spans if s.service == FEATURE and s.name == "process features.compute"]
        assert computes and all(s.parent_span_id in requests for s in computes), _dump(spans)
        # inside the feature service: PostgreSQL, graph and Redis calls
        feature_names = {s.name for s in spans if s.service == FEATURE}
        assert any("postgres" in n for n in feature_names), feature_names
        assert any("graph" in n for n in feature_names), feature_names
        assert any("redis" in n for n in feature_names), feature_names
        for s in spans:
            if s.service == FEATURE and parent(s).service != FEATURE:
                assert parent(s).service == INFERENCE, str(s)

        # every span ends after it starts, and inside its trace's time range
        assert all(0 < s.start_ns <= s.end_ns for s in spans)


# ------------------------------------------------------------------------- the personalization family's trace
def test_a_personalization_request_is_one_trace_labelled_by_its_family(
    make_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`POST /score/personalization` -> `personalization.score` -> the inference worker's ONNX run: one trace, and
    every span that scores carries `fraudmesh.model_family = personalization` (fraud's carry `fraud`, above)."""
    _clean_otel_env(monkeypatch)
    models = tmp_path / "models-personalization"
    train_bootstrap(models)
    with OtlpReceiver() as rx:
        stack = make_stack(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "FRAUDMESH_PERSONALIZATION_MODEL_DIR": str(models),
            }
        )
        trace_id, client_span_id, traceparent = _traceparent()
        r = httpx.post(
            f"{stack.gateway_url}/score/personalization",
            json={"user_id": "user_000001", "item_id": "item_anything"},
            headers={"traceparent": traceparent},
            timeout=30,
        )
        assert r.status_code == 200, r.text

        def complete(spans: list[SpanRecord]) -> bool:
            names = {s.name for s in spans}
            ids = {s.span_id for s in spans}
            return (
                {"process personalization.score", "onnx score"} <= names
                and GATEWAY in {s.service for s in spans}
                and sum(1 for s in spans if s.parent_span_id not in ids) <= 1
            )

        spans = rx.wait_for(complete, timeout=20.0, trace_id=trace_id)
        by_id = {s.span_id: s for s in spans}
        roots = [s for s in spans if s.parent_span_id not in by_id]
        assert len(roots) == 1, _dump(spans)
        root = roots[0]
        assert (root.service, root.name) == (GATEWAY, "POST /score/personalization"), str(root)
        assert root.parent_span_id == client_span_id
        (consumer,) = [s for s in spans if s.name == "process personalization.score"]
        assert consumer.service == INFERENCE and consumer.kind == "CONSUMER"
        assert_messaging(consumer, "process", "personalization.score")
        assert by_id[consumer.parent_span_id].service == GATEWAY
        (onnx,) = [s for s in spans if s.name == "onnx score"]
        assert onnx.parent_span_id == consumer.span_id and onnx.attributes.get("fraudmesh.rows") == 1
        for s in (root, consumer, onnx):
            assert s.attributes.get(MODEL_FAMILY) == "personalization", str(s)
        assert not any(s.attributes.get(MODEL_FAMILY) == "fraud" for s in spans), _dump(spans)


# ----------------------------------------------------------------------------------- no endpoint, no export
async def _score_over_nats_seeing_partials(url: str, traceparent: str) -> tuple[ScoreReply, list[dict[str, str]]]:
    """Score over NATS with a traceparent, and capture the headers of the partials the aggregator publishes."""
    codec = Codec()
    nc = await nats.connect(url)
    seen: list[dict[str, str]] = []

    async def on_partial(m: Msg) -> None:
        seen.append(dict(m.headers or {}))

    try:
        sub = await nc.subscribe(subjects.PARTIALS_SUBJECT, cb=on_partial)
        txs = [Transaction(card_id=f"card_{i}", transaction_amount=10.0 + i) for i in range(400)]
        msg = await nc.request(
            subjects.SCORE,
            codec.encode(ScoreRequest(transactions=txs, request_id="no-otel")),
            timeout=15,
            headers={subjects.HDR_DEADLINE: str(int((time.time() + 10) * 1000)), "traceparent": traceparent},
        )
        await sub.unsubscribe()
        return codec.decode(msg.data, ScoreReply), seen
    finally:
        await nc.close()


@pytest.fixture
def default_port_receiver() -> Iterator[OtlpReceiver]:
    """The receiver on OTLP/HTTP's default port 4318 when it is free: a service that exported without being told
    where would send there. Else on a free port, which still proves nothing reaches this test's receiver."""
    with OtlpReceiver(port=4318 if port_is_free(4318) else 0) as rx:
        yield rx


def test_nothing_is_exported_without_an_endpoint_and_scoring_still_works(
    make_stack, default_port_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _clean_otel_env(monkeypatch)
    rx = default_port_receiver
    stack = make_stack({"OTEL_BSP_SCHEDULE_DELAY": "200"})
    trace_id, _, traceparent = _traceparent()
    _predict(stack, traceparent)
    # without an SDK the W3C context is still carried through: the aggregator passes the caller's traceparent on
    reply, partial_headers = asyncio.run(_score_over_nats_seeing_partials(stack.state.nats_url, traceparent))
    assert reply.complete is True and len(reply.partials) == 2
    assert len(partial_headers) == 2
    assert all(h.get("traceparent", "").split("-")[1] == trace_id for h in partial_headers), partial_headers
    time.sleep(1.5)  # several export intervals (500 ms) of a BatchSpanProcessor, had one been installed
    assert rx.requests == 0 and rx.spans() == [], _dump(rx.spans())
    assert not rx.rejected, rx.rejected


# --------------------------------------------------------------------- the gateway's plugin, in process
def test_gateway_plugin_only_with_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_otel_env(monkeypatch)
    assert otel_plugins(None) == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    assert otel_plugins(None) == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    from litestar.plugins.opentelemetry import OpenTelemetryPlugin

    assert [type(p) for p in otel_plugins(None)] == [OpenTelemetryPlugin]


def test_gateway_server_span_is_current_in_the_handler_and_probes_are_not_traced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `NatsBridge.score` relies on: while a route handler runs, the plugin's server span is the current one,
    so `inject` writes a traceparent whose parent id is that span (the aggregator's span becomes its child)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    _clean_otel_env(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    injected: list[dict[str, str]] = []

    @get("/predict-like")
    async def handler() -> dict[str, str]:
        injected.append(inject({}))
        return {"ok": "yes"}

    probes = [get(path, name=f"probe{i}")(_probe) for i, path in enumerate(UNTRACED_PATHS)]
    app = Litestar(route_handlers=[handler, *probes], plugins=otel_plugins(None, tracer_provider=provider))
    trace_id, client_span_id, traceparent = _traceparent()
    with TestClient(app) as client:
        assert client.get("/predict-like", headers={"traceparent": traceparent}).status_code == 200
        for path in UNTRACED_PATHS:
            assert client.get(path).status_code == 200
    provider.force_flush()
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /predict-like"], [s.name for s in spans]
    server = spans[0]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None and format(server.parent.span_id, "016x") == client_span_id
    assert injected == [{"traceparent": f"00-{trace_id}-{format(server.context.span_id, '016x')}-01"}]


async def _probe() -> dict[str, str]:
    return {"status": "ok"}
