"""Helpers to run fraudmesh services as real processes against the suite's real servers.

The suite's nats-server runs with auth (deploy/nats_auth.py): the URL a test holds carries the admin's
credentials, and each service is started as its own user (deploy/stack.py `StackState.service_env`). When a
stack stops, a service refused by NATS (a permission missing from deploy/nats_auth.py) fails the test."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from deploy.servers import Server, alive, free_port, start_nats
from deploy.stack import ServiceProc, StackState, start_service, stop_service, wait_ready

TEST_DEFAULTS = {"FRAUDMESH_IDEMPOTENCY_ENABLED": "false"}
"""Settings of every test stack unless the test says otherwise. Idempotency (on in the product) is off: the suite's
tests score made-up transactions whose ids repeat across tests with other bodies, on stacks that share the
session's Redis, and re-score the same rows to compare (features now cached, identical decisions after a fault);
with it on they would get 409s and stored decisions back. The idempotency tests (tests/test_gateway_admin.py) turn
it on, on a stack and Redis of their own; `fraudmesh up` (tests/test_stack_cli.py) runs the product's default."""


class Stack:
    """A set of service processes sharing one nats-server (and the session's Redis and PostgreSQL)."""

    def __init__(
        self,
        run_dir: Path,
        nats_url: str,
        redis_url: str,
        postgres_dsn: str,
        model_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.state = StackState(run_dir=str(run_dir), nats_url=nats_url, redis_url=redis_url, postgres_dsn=postgres_dsn)
        self.model_dir = model_dir
        self.env = {"FRAUDMESH_MODEL_DIR": str(model_dir), **TEST_DEFAULTS, **(env or {})}
        self.procs: list[ServiceProc] = []
        self.gateway_url = ""
        self._counts: dict[str, int] = {}

    def start(
        self, name: str, n: int = 1, env: dict[str, str] | None = None, *, same_port: bool = False
    ) -> list[ServiceProc]:
        """`n` more instances of `name`; a gateway listens on a port of its own, or with `same_port` on the port of
        the gateway started before it (both bind with SO_REUSEPORT, as `fraudmesh up --gateways N` runs them)."""
        started = []
        for _ in range(n):
            i = self._counts.get(name, 0)
            self._counts[name] = i + 1
            shared = same_port and self.gateway_url
            port = (int(self.gateway_url.rsplit(":", 1)[1]) if shared else free_port()) if name == "gateway" else 0
            p = start_service(self.state, name, i, {**self.env, **(env or {})}, http_port=port)
            if name == "gateway":
                self.gateway_url = f"http://127.0.0.1:{port}"
            self.procs.append(p)
            started.append(p)
        return started

    def start_all(self, inference: int = 1, ready_timeout: float = 30.0, gateways: int = 1) -> None:
        """One of each service with `inference` inference workers (and `gateways` gateways on one port), ready: the
        gateway answers ready, and every inference worker and the feature worker (it migrates the ledger before it
        answers) are healthy."""
        self.start("aggregator")
        self.start("inference", inference)
        self.start("feature")
        self.start("gateway", gateways, same_port=True)
        self.wait_ready(ready_timeout)
        self.wait_health("inference", inference)
        self.wait_health("feature", 1)

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_ready(self.gateway_url, timeout, self.procs)

    def wait_listening(self, timeout: float = 15.0) -> None:
        """Gateway answers HTTP at all (ready or not)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                httpx.get(f"{self.gateway_url}/health", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"gateway {self.gateway_url} not listening")

    def wait_health(self, service: str, instances: int, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                doc = httpx.get(f"{self.gateway_url}/health", timeout=2.0).json()
                if doc["services"][service]["instances"] >= instances:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{service} did not reach {instances} healthy instance(s)")

    def kill(self, proc: ServiceProc, sig: int = signal.SIGKILL) -> None:
        stop_service(proc, timeout=5.0, sig=sig)

    def log_of(self, proc: ServiceProc) -> str:
        return Path(proc.log).read_text(errors="replace")

    def stop(self) -> None:
        for p in self.procs:
            if alive(p.pid):
                stop_service(p, timeout=10.0)
        refused = [f"{p.label}: {line.strip()[:300]}" for p in self.procs for line in nats_refusals(p)]
        if refused:
            raise AssertionError(
                "NATS refused a service a permission it needs; add it to deploy/nats_auth.py `permissions`:\n"
                + "\n".join(refused[:20])
            )


def metric(port: int, sample: str) -> float:
    """Sum of the samples on a process's metrics port whose line starts with `sample` (a name, optionally with the
    start of its labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample))


def nats_refusals(proc: ServiceProc) -> list[str]:
    """Log lines where NATS refused the service (permissions or authorization violations)."""
    path = Path(proc.log)
    if not path.exists():
        return []
    return [
        line
        for line in path.read_text(errors="replace").splitlines()
        if "permissions violation" in line.lower() or "authorization violation" in line.lower()
    ]


def own_nats(run_dir: Path) -> Server:
    return start_nats(run_dir)


@contextmanager
def own_stack(
    d: Path,
    redis_url: str,
    postgres_dsn: str,
    model_dir: Path,
    *,
    inference: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
    gateways: int = 1,
) -> Iterator[Stack]:
    """Every service (`Stack.start_all`) on a nats-server of its own in `d`, for topologies that must not share
    streams or workers with the session's stack; the stack, then its nats-server, stopped on exit."""
    srv = own_nats(d / "nats")
    s = Stack(d / "stack", srv.extra["url"], redis_url, postgres_dsn, model_dir, env=env)
    try:
        s.start_all(inference, ready_timeout, gateways)
        yield s
    finally:
        try:
            s.stop()
        finally:
            srv.stop()


async def clear_redis_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under `prefix:` (a module's own online-store namespace, before its feature service starts)."""
    r = aioredis.from_url(redis_url)
    try:
        async for key in r.scan_iter(f"{prefix}:*"):
            await r.delete(key)
    finally:
        await r.aclose()
