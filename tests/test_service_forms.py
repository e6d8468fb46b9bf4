"""The service base is the one way in: each form (request-reply endpoint, JetStream consumer, listener, KV
watch) gets a span that follows the OpenTelemetry messaging conventions and a handler metric; a consumer
applies its policy (poison -> dead letter + owner told + one counter, transient -> nak and retry, expired ->
term), heartbeats a slow handler, handles micro-batches, and drains on stop.

A small service runs in this process on the suite's nats-server, with its spans exported over OTLP/HTTP to
`tests.otlp_receiver.OtlpReceiver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.kv import KeyValue
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from shared import subjects
from shared.context import Context, Delivered, Delivery, Poison, Transient
from shared.messages import Codec
from shared.policy import ConsumerPolicy
from shared.service import RAW, Service
from shared.settings import load_settings
from tests.otlp_receiver import OtlpReceiver, SpanRecord


class Ping(msgspec.Struct, tag="ping", tag_field="type", kw_only=True):
    text: str
    fail: str = ""  # "poison", "transient", "bug"


class Pong(msgspec.Struct, tag="pong", tag_field="type", kw_only=True):
    text: str


class Notice(msgspec.Struct, tag="notice", tag_field="type", kw_only=True):
    reason: str


@dataclass
class Names:
    """Per-test names, so tests sharing the suite's nats-server never see each other's messages."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def stream(self) -> str:
        return f"PROBE_{self.tag}"

    @property
    def subject(self) -> str:
        return f"probe.{self.tag}.work"

    @property
    def dlq_stream(self) -> str:
        return f"PROBE_DLQ_{self.tag}"

    @property
    def dlq(self) -> str:
        return f"probe.{self.tag}.dlq"

    @property
    def bucket(self) -> str:
        return f"probe_{self.tag}"


class Probe(Service):
    name = "probe"

    def __init__(self, names: Names, nats_url: str, provider: TracerProvider | None, batch: bool) -> None:
        super().__init__(load_settings({}, nats_url=nats_url), tracer_provider=provider)
        self.names = names
        self.batch = batch
        self.seen: list[str] = []
        self.batches: list[list[str]] = []
        self.entries: list[str] = []
        self.calls: dict[str, int] = {}
        self.hold_s = 0.0

    async def on_start(self) -> None:
        n = self.names
        self.endpoint(f"probe.{n.tag}.echo", Ping, self.echo, name="echo")
        self.listener(f"probe.{n.tag}.inbox", Ping, self.inbox, name="inbox")
        self.listener(f"probe.{n.tag}.raw", RAW, self.raw, name="raw")
        self.kv_watch(n.bucket, self.kv, lambda: self.nc.jetstream().key_value(n.bucket), name="state")
        policy = ConsumerPolicy(
            max_deliver=3,
            backoff_base_s=0.02,
            dead_letter_subject=n.dlq,
            owner_notice=lambda data, reason: Notice(reason=reason),
        )
        if self.batch:
            self.consumer(
                name="work",
                stream=n.stream,
                durable="workers",
                message_type=Ping,
                batch_handler=self.work_batch,
                batch_size=10,
                max_wait_s=0.3,
                policy=policy,
            )
        else:
            self.consumer(
                name="work",
                stream=n.stream,
                durable="workers",
                message_type=Ping,
                handler=self.work,
                concurrency=2,
                policy=policy,
            )

    async def echo(self, req: Ping, _ctx: Context) -> Pong:
        return Pong(text=req.text.upper())

    async def inbox(self, msg: Ping, _ctx: Context) -> None:
        self.seen.append(f"inbox:{msg.text}")

    async def raw(self, data: bytes, _ctx: Context) -> None:
        self.seen.append(f"raw:{data.decode()}")

    async def kv(self, entry: KeyValue.Entry, _ctx: Context) -> None:
        self.entries.append(f"{entry.key}={(entry.value or b'').decode()}")

    async def work(self, msg: Ping, delivery: Delivery) -> None:
        self.calls[msg.text] = self.calls.get(msg.text, 0) + 1
        if self.hold_s:
            await asyncio.sleep(self.hold_s)
        if msg.fail == "poison":
            raise Poison(f"{msg.text} can never work")
        if msg.fail == "transient" and delivery.deliveries < 3:
            raise Transient("store down")
        if msg.fail == "down":
            raise ConnectionRefusedError(111, "Connection refused")
        if msg.fail == "bug":
            raise ValueError("a bug")
        self.seen.append(f"work:{msg.text}:{delivery.deliveries}")

    async def work_batch(self, items: list[Delivered[Ping]]) -> None:
        self.batches.append([d.message.text for d in items])
        for d in items:
            if d.message.fail == "poison":
                d.delivery.reject(f"{d.message.text} is poison")


async def declare(js: JetStreamContext, n: Names, ack_wait: float = 3.0) -> None:
    await js.add_stream(StreamConfig(name=n.stream, subjects=[n.subject]))
    await js.add_stream(StreamConfig(name=n.dlq_stream, subjects=[n.dlq]))
    await js.add_consumer(
        n.stream,
        ConsumerConfig(
            durable_name="workers",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=3,
            filter_subject=n.subject,
        ),
    )
    await js.create_key_value(bucket=n.bucket)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


Start = Callable[..., Awaitable[Probe]]


@pytest.fixture
async def start_probe(nats_url: str, client: Client) -> AsyncIterator[Start]:
    probes: list[Probe] = []

    async def start(
        names: Names, provider: TracerProvider | None = None, ack_wait: float = 3.0, batch: bool = False
    ) -> Probe:
        await declare(client.jetstream(), names, ack_wait)
        probe = Probe(names, nats_url, provider, batch)
        await probe.start()
        probes.append(probe)
        return probe

    yield start
    for p in probes:
        await p.stop(timeout=5.0)
    js = client.jetstream()
    for p in probes:
        for stream in (p.names.stream, p.names.dlq_stream, f"KV_{p.names.bucket}"):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def handled(probe: Probe, handler: str, outcome: str = "ok") -> float:
    value = probe.registry.get_sample_value(
        "fraudmesh_handler_messages_total", {"service": "probe", "handler": handler, "outcome": outcome}
    )
    return value or 0.0


def dead_lettered(probe: Probe, reason: str) -> float:
    value = probe.registry.get_sample_value(
        "fraudmesh_dead_lettered_total", {"service": "probe", "consumer": "work", "reason": reason}
    )
    return value or 0.0


CODEC = Codec()


# ------------------------------------------------------------------------------------ every form, traced
async def test_every_form_gets_a_convention_span_and_a_handler_metric(start_probe: Start, client: Client) -> None:
    n = Names()
    with OtlpReceiver() as rx:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{rx.endpoint}/v1/traces")))
        probe = await start_probe(n, provider)
        js = client.jetstream()
        reply = await client.request(f"probe.{n.tag}.echo", CODEC.encode(Ping(text="hi")), timeout=5)
        assert CODEC.decode(reply.data, Pong).text == "HI"
        await js.publish(n.subject, CODEC.encode(Ping(text="job")), headers={subjects.HDR_MSG_ID: "job-1"})
        await client.publish(f"probe.{n.tag}.inbox", CODEC.encode(Ping(text="note")))
        await (await js.key_value(n.bucket)).put("active", b"v2")
        await eventually(
            lambda: {"work:job:1", "inbox:note"} <= set(probe.seen) and "active=v2" in probe.entries, "all forms"
        )
        for handler in ("echo", "work", "inbox", "state"):
            await eventually(lambda h=handler: handled(probe, h) >= 1, f"handler metric of {handler}")  # type: ignore[misc]

        expected = {
            f"process probe.{n.tag}.echo": ("endpoint", f"probe.{n.tag}.echo"),
            f"process {n.subject}": ("consumer", n.subject),
            f"process probe.{n.tag}.inbox": ("listener", f"probe.{n.tag}.inbox"),
            f"process $KV.{n.bucket}": ("kv watch", f"$KV.{n.bucket}.active"),
        }

        def spans() -> dict[str, SpanRecord]:
            return {s.name: s for s in rx.spans() if s.name in expected}

        await eventually(
            lambda: len(spans()) == len(expected),
            f"spans {sorted(expected)}; got {sorted(s.name for s in rx.spans())} {rx.rejected}",
        )
        provider.shutdown()
    for name, (form, destination) in expected.items():
        s = spans()[name]
        assert s.kind == "CONSUMER", (form, str(s))
        assert s.attributes["messaging.system"] == "nats", form
        assert s.attributes["messaging.operation.type"] == "process", form
        assert s.attributes["messaging.destination.name"] == destination, form
    work = spans()[f"process {n.subject}"]
    assert work.attributes["messaging.message.id"] == "job-1"
    assert work.attributes["messaging.consumer.group.name"] == "workers"
    assert work.attributes["messaging.nats.delivery_count"] == 1


async def test_raw_listener_and_discovery(start_probe: Start, client: Client) -> None:
    n = Names()
    probe = await start_probe(n)
    await client.publish(f"probe.{n.tag}.raw", b"bytes as they came")
    await eventually(lambda: "raw:bytes as they came" in probe.seen, "raw listener")
    assert probe.discovery is not None
    info = msgspec.json.decode((await client.request(f"$SRV.INFO.probe.{probe.discovery.id}", b"", timeout=5)).data)
    assert info["name"] == "probe" and info["version"]
    assert info["metadata"]["instance_id"] == probe.instance_id
    kinds = {e["name"]: e["metadata"]["kind"] for e in info["endpoints"]}
    assert kinds == {
        "echo": "endpoint",
        "health": "endpoint",
        "work": "consumer",
        "inbox": "listener",
        "raw": "listener",
        "state": "kv_watch",
        "runtime_config": "kv_watch",  # every service follows the runtime settings (POST /config)
    }
    stats = msgspec.json.decode((await client.request(f"$SRV.STATS.probe.{probe.discovery.id}", b"", timeout=5)).data)
    raw = next(e for e in stats["endpoints"] if e["name"] == "raw")
    assert raw["num_requests"] == 1 and raw["num_errors"] == 0
    ping = msgspec.json.decode((await client.request("$SRV.PING.probe", b"", timeout=5)).data)
    assert ping["type"] == "io.nats.micro.v1.ping_response"


# -------------------------------------------------------------------------------------- consumer policy
async def test_poison_is_dead_lettered_once_with_its_reason_and_the_owner_is_told(
    start_probe: Start, client: Client
) -> None:
    n = Names()
    probe = await start_probe(n)
    js = client.jetstream()
    owner = await client.subscribe(f"probe.{n.tag}.owner")
    headers = {subjects.HDR_REPLY_TO: f"probe.{n.tag}.owner", subjects.HDR_MSG_ID: "p-1"}
    await js.publish(n.subject, CODEC.encode(Ping(text="bad", fail="poison")), headers=headers)
    await js.publish(n.subject, b"\xc1 not msgpack", headers={subjects.HDR_MSG_ID: "p-2"})
    notice = CODEC.decode((await owner.next_msg(timeout=10)).data, Notice)
    assert notice.reason == "Poison: bad can never work"
    await eventually(lambda: dead_lettered(probe, "undecodable") == 1, "undecodable counted")
    assert dead_lettered(probe, "poison") == 1
    assert probe.calls == {"bad": 1}, "a poison message is never retried"
    dlq = await js.stream_info(n.dlq_stream)
    assert dlq.state.messages == 2
    first = await js.get_msg(n.dlq_stream, 1)
    assert first.headers is not None and first.headers[subjects.HDR_DLQ_REASON] == "Poison: bad can never work"
    assert subjects.HDR_MSG_ID not in first.headers
    assert handled(probe, "work", "poison") == 1 and handled(probe, "work", "undecodable") == 1
    info = await js.consumer_info(n.stream, "workers")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_transient_failures_are_retried_with_backoff_and_never_dead_lettered(
    start_probe: Start, client: Client
) -> None:
    n = Names()
    probe = await start_probe(n)
    await client.jetstream().publish(n.subject, CODEC.encode(Ping(text="flaky", fail="transient")))
    await eventually(lambda: "work:flaky:3" in probe.seen, "success on the third delivery")
    assert handled(probe, "work", "retried") == 2
    assert sum(dead_lettered(probe, r) for r in ("poison", "undecodable", "dead_lettered")) == 0


async def test_a_dependency_down_for_every_delivery_is_given_up_not_dead_lettered(
    start_probe: Start, client: Client
) -> None:
    n = Names()
    probe = await start_probe(n)
    owner = await client.subscribe(f"probe.{n.tag}.owner")
    headers = {subjects.HDR_REPLY_TO: f"probe.{n.tag}.owner"}
    await client.jetstream().publish(n.subject, CODEC.encode(Ping(text="down", fail="down")), headers=headers)
    notice = CODEC.decode((await owner.next_msg(timeout=10)).data, Notice)
    assert notice.reason.startswith("unavailable after 3 tries: ConnectionRefusedError")
    assert probe.calls == {"down": 3}
    assert handled(probe, "work", "retried") == 2 and handled(probe, "work", "gave_up") == 1
    assert (await client.jetstream().stream_info(n.dlq_stream)).state.messages == 0
    assert sum(dead_lettered(probe, r) for r in ("poison", "undecodable", "dead_lettered")) == 0
    info = await client.jetstream().consumer_info(n.stream, "workers")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_bug_is_retried_then_dead_lettered_on_the_last_delivery(start_probe: Start, client: Client) -> None:
    n = Names()
    probe = await start_probe(n)
    await client.jetstream().publish(n.subject, CODEC.encode(Ping(text="buggy", fail="bug")))
    await eventually(lambda: dead_lettered(probe, "dead_lettered") == 1, "dead-lettered after 3 deliveries")
    assert probe.calls == {"buggy": 3}
    last = await client.jetstream().get_msg(n.dlq_stream, 1)
    assert last.headers is not None
    assert last.headers[subjects.HDR_DLQ_REASON] == "failed 3 times: ValueError: a bug"


async def test_an_expired_message_is_terminated_unhandled(start_probe: Start, client: Client) -> None:
    n = Names()
    probe = await start_probe(n)
    past = str(int(time.time() * 1000) - 1000)
    await client.jetstream().publish(n.subject, CODEC.encode(Ping(text="late")), headers={subjects.HDR_DEADLINE: past})
    await eventually(lambda: handled(probe, "work", "expired") == 1, "expired counted")
    assert probe.calls == {}
    assert (await client.jetstream().stream_info(n.dlq_stream)).state.messages == 0


async def test_a_slow_handler_is_kept_alive_by_heartbeats(start_probe: Start, client: Client) -> None:
    n = Names()
    probe = await start_probe(n, ack_wait=0.6)
    probe.hold_s = 2.0  # more than three ack_waits
    await client.jetstream().publish(n.subject, CODEC.encode(Ping(text="slow")))
    await eventually(lambda: "work:slow:1" in probe.seen, "the slow message", timeout=15)
    await asyncio.sleep(1.0)
    assert probe.calls == {"slow": 1}, "redelivered although its handler was running"


async def test_micro_batches_ack_the_good_and_dead_letter_the_rejected(start_probe: Start, client: Client) -> None:
    n = Names()
    probe = await start_probe(n, batch=True)
    js = client.jetstream()
    for i in range(5):
        await js.publish(n.subject, CODEC.encode(Ping(text=f"t{i}", fail="poison" if i == 2 else "")))
    await eventually(lambda: sum(len(b) for b in probe.batches) == 5, "five messages in batches")
    await eventually(lambda: dead_lettered(probe, "poison") == 1, "the rejected one dead-lettered")
    assert handled(probe, "work", "ok") == 4
    info = await js.consumer_info(n.stream, "workers")
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0


async def test_stop_waits_for_the_message_in_flight_and_fetches_no_more(
    start_probe: Start, client: Client, nats_url: str
) -> None:
    n = Names()
    probe = await start_probe(n)
    probe.hold_s = 0.5
    js = client.jetstream()
    await js.publish(n.subject, CODEC.encode(Ping(text="first")))
    await eventually(lambda: probe.calls.get("first") == 1, "first in flight")
    await probe.stop(timeout=5.0)
    assert "work:first:1" in probe.seen, "stop did not wait for the handler in flight"
    await js.publish(n.subject, CODEC.encode(Ping(text="second")))
    await asyncio.sleep(0.3)
    assert "second" not in probe.calls
    info = await js.consumer_info(n.stream, "workers")
    assert info.num_ack_pending == 0 and info.num_pending == 1
