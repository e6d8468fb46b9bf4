#!/usr/bin/env python3
"""Score a batch of transactions over NATS, the way another system does it.

Only nats-py and msgspec are used: nothing from fraudmesh is imported. The request is a plain dict encoded
as msgpack and sent as a request on `fraud.score` with an absolute deadline in the `Fraudmesh-Deadline`
header; the reply is decoded into a plain dict and told apart by its `type` field (`score_reply` or `error`).
The wire API is described in docs/nats-api.md.

    python examples/nats_client.py                       # a generated batch of 10 transactions
    python examples/nats_client.py --count 1000          # a generated batch of 1000
    python examples/nats_client.py --file batch.json     # a JSON list, or {"transactions": [...]}
    python examples/nats_client.py --file batch.json --json > reply.json

NATS requires credentials: the `public` user may request `fraud.score` and publish the ingest subjects, nothing
else. Against the local stack, `eval "$(fraudmesh nats-user public)"` sets FRAUDMESH_NATS_URL, _USER and
_PASSWORD, which this script reads (or pass --nats-url, --user, --password).

Without --json, stdout gets one JSON line per transaction (transaction_id, fraud_score, risk_level) and
stderr a summary. With --json, stdout gets the whole decoded reply as one JSON document and nothing else.

Exit status: 0 complete reply; 1 error reply, no responders, timeout or unreadable input; 3 the reply came
back incomplete (the deadline passed before every transaction was scored; unscored ones have a null score).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError

SUBJECT = "fraud.score"
HDR_DEADLINE = "Fraudmesh-Deadline"  # absolute deadline, Unix epoch milliseconds, integer as text
HDR_REQUEST_ID = "Fraudmesh-Request-Id"
# The aggregator answers (maybe incomplete) just before the deadline: wait a little past it.
REPLY_GRACE_S = 0.5


def generate_batch(count: int, seed: int) -> list[dict[str, Any]]:
    """A small reproducible batch: the same --count and --seed give the same transactions in both examples."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    countries = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "BR": "BRL", "NG": "USD"}
    mccs = ["5411", "5812", "5541", "5311", "5999", "4111", "7995", "6051"]
    txs = []
    for i in range(count):
        country = rng.choice(list(countries))
        txs.append(
            {
                "transaction_id": f"ex-{seed}-{i:05d}",
                "card_id": f"card_{rng.randrange(5000):06d}",
                "transaction_amount": round(rng.lognormvariate(3.6, 1.2), 2),
                "merchant_id": f"m_{rng.randrange(800):05d}",
                "mcc_code": rng.choice(mccs),
                "country_code": country,
                "currency": countries[country] if rng.random() > 0.1 else "USD",
                "channel": rng.choice(["pos", "pos", "ecom", "ecom", "atm", "moto", "p2p"]),
                # an RFC 3339 string; a timezone-aware datetime (sent as a msgpack timestamp) works too
                "timestamp": (start + dt.timedelta(seconds=rng.randrange(86400))).isoformat(),
                "device_id": f"dev_{rng.randrange(20000):07d}",
                "ip_address": f"10.{rng.randrange(250)}.{rng.randrange(250)}.{rng.randrange(1, 250)}",
            }
        )
    return txs


def load_batch(path: str) -> list[dict[str, Any]]:
    """A JSON list of transactions, or an object with a `transactions` list (the body of POST /predict)."""
    doc = msgspec.json.decode(Path(path).read_bytes())
    if isinstance(doc, dict):
        doc = doc.get("transactions")
    if not isinstance(doc, list) or not doc or not all(isinstance(t, dict) for t in doc):
        raise ValueError('expected a non-empty JSON list of transaction objects, or {"transactions": [...]}')
    return doc


def fail(message: str) -> int:
    print(f"nats_client: {message}", file=sys.stderr)
    return 1


def print_error_reply(reply: dict[str, Any]) -> None:
    print(f"error reply: {reply.get('code')}: {reply.get('message')}", file=sys.stderr)
    if reply.get("request_id"):
        print(f"  request_id: {reply['request_id']}", file=sys.stderr)
    for err in reply.get("errors") or []:
        print(f"  {err.get('path')}: {err.get('message')}", file=sys.stderr)
    if reply.get("retryable"):
        print("  (retryable)", file=sys.stderr)


def print_scores(reply: dict[str, Any]) -> None:
    missing = iter(reply.get("missing_transaction_ids") or [])
    out = sys.stdout
    for result in reply["results"]:
        if result is None:  # not scored before the deadline; the ids of these are listed in order
            line = {"transaction_id": next(missing, None), "fraud_score": None, "risk_level": None}
        else:
            line = {k: result.get(k) for k in ("transaction_id", "fraud_score", "risk_level")}
        out.write(msgspec.json.encode(line).decode() + "\n")
    out.flush()


def print_summary(reply: dict[str, Any], elapsed_ms: float) -> None:
    results = reply["results"]
    scored = [r for r in results if r is not None]
    levels: dict[str, int] = {}
    for r in scored:
        levels[r["risk_level"]] = levels.get(r["risk_level"], 0) + 1
    partials = reply.get("partials") or []
    workers = sorted({p["worker_id"] for p in partials if p.get("worker_id")})
    models = sorted({r["model_version"] for r in scored if r.get("model_version")})
    print(
        f"request {reply['request_id']}: scored {len(scored)} of {len(results)} "
        f"(complete={str(reply['complete']).lower()}) in {elapsed_ms:.1f} ms round trip "
        f"({reply.get('latency_ms', 0.0):.1f} ms in the aggregator)",
        file=sys.stderr,
    )
    print(
        f"  partials: {len(partials)}, inference workers: {len(workers)}, model: {', '.join(models) or '-'}",
        file=sys.stderr,
    )
    print(
        "  risk levels: " + ", ".join(f"{k} {levels.get(k, 0)}" for k in ("low", "medium", "high", "critical")),
        file=sys.stderr,
    )
    if not reply["complete"]:
        n = len(reply.get("missing_transaction_ids") or [])
        print(f"  INCOMPLETE: {n} transaction(s) not scored before the deadline", file=sys.stderr)


async def score(args: argparse.Namespace, transactions: list[dict[str, Any]]) -> int:
    async def quiet(_exc: Exception) -> None:  # errors are reported below, once, in plain words
        pass

    try:
        nc = await nats.connect(
            args.nats_url,
            name="fraudmesh-example",
            connect_timeout=2,
            allow_reconnect=False,
            error_cb=quiet,
            user=args.user or None,
            password=args.password or None,
        )
    except (NoServersError, OSError, NatsError, TimeoutError) as exc:
        if "authorization violation" in str(exc).lower():
            return fail(
                f"NATS at {args.nats_url} refused user {args.user or '(none)'!r}: wrong or missing credentials. "
                f'Against the local stack: eval "$(fraudmesh nats-user public)"'
            )
        return fail(
            f"cannot connect to NATS at {args.nats_url} ({type(exc).__name__}). Is fraudmesh up "
            f"(`fraudmesh up`, `fraudmesh status`)?"
        )
    try:
        # unique per request: JetStream deduplicates partials by request id for 2 minutes
        request_id = args.request_id or uuid.uuid4().hex
        body = {"type": "score", "request_id": request_id, "transactions": transactions}
        if args.partial_size:
            body["partial_size"] = args.partial_size
        payload = msgspec.msgpack.encode(body)
        deadline_ms = int(time.time() * 1000) + args.timeout_ms
        headers = {HDR_DEADLINE: str(deadline_ms), HDR_REQUEST_ID: request_id}
        started = time.perf_counter()
        try:
            msg = await nc.request(SUBJECT, payload, timeout=args.timeout_ms / 1000 + REPLY_GRACE_S, headers=headers)
        except NoRespondersError:
            return fail(
                f"no responders on {SUBJECT}: no aggregator is subscribed. Is fraudmesh up "
                f"(`fraudmesh up`, `fraudmesh status`)?"
            )
        except (NatsTimeoutError, TimeoutError):
            return fail(
                f"no reply on {SUBJECT} within {args.timeout_ms} ms (+{REPLY_GRACE_S}s grace); "
                f"request {request_id}. Retry with a larger --timeout-ms."
            )
        except MaxPayloadError:
            return fail(
                f"the request is {len(payload)} bytes, more than the server's max_payload "
                f"({nc.max_payload} bytes). Send a smaller batch."
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        await nc.close()

    try:
        reply = msgspec.msgpack.decode(msg.data)
    except msgspec.DecodeError as exc:
        return fail(f"undecodable reply ({exc})")
    if not isinstance(reply, dict):
        return fail(f"unexpected reply: {reply!r}")
    kind = reply.get("type")
    if kind == "error":
        if args.json:
            sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
        print_error_reply(reply)
        return 1
    if kind != "score_reply":
        return fail(f"unexpected reply type {kind!r}")
    if args.json:
        sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
    else:
        print_scores(reply)
    print_summary(reply, elapsed_ms)
    return 0 if reply["complete"] else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Score transactions on fraudmesh over NATS (fraud.score).")
    env = os.environ
    p.add_argument(
        "--nats-url",
        default=env.get("FRAUDMESH_NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server URL (default: FRAUDMESH_NATS_URL or nats://127.0.0.1:4222)",
    )
    p.add_argument("--user", default=env.get("FRAUDMESH_NATS_USER", ""), help="NATS user (FRAUDMESH_NATS_USER)")
    p.add_argument(
        "--password", default=env.get("FRAUDMESH_NATS_PASSWORD", ""), help="NATS password (FRAUDMESH_NATS_PASSWORD)"
    )
    p.add_argument(
        "--file",
        help='JSON file: a list of transactions or {"transactions": [...]}; without it a batch is generated',
    )
    p.add_argument("--count", type=int, default=10, help="size of the generated batch (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated batch (default: %(default)s)")
    p.add_argument("--timeout-ms", type=int, default=5000, help="request deadline in ms (default: %(default)s)")
    p.add_argument("--partial-size", type=int, help="transactions per partial (server default: 200)")
    p.add_argument("--request-id", help="request id (default: a fresh uuid; never reuse one within 2 minutes)")
    p.add_argument("--json", action="store_true", help="print the whole decoded reply as JSON, nothing else")
    args = p.parse_args(argv)
    if args.timeout_ms < 1:
        p.error("--timeout-ms must be at least 1")
    if args.count < 1:
        p.error("--count must be at least 1")
    try:
        transactions = load_batch(args.file) if args.file else generate_batch(args.count, args.seed)
    except (OSError, ValueError) as exc:  # msgspec.DecodeError is a ValueError
        return fail(f"cannot read {args.file}: {exc}")
    return asyncio.run(score(args, transactions))


if __name__ == "__main__":
    sys.exit(main())
