"""Several gateway processes on one host share the HTTP port (SO_REUSEPORT, `fraudmesh up --gateways N`): the kernel
spreads new connections over them, each is scraped on its own metrics port, and a killed one's share goes to the
others without a refused connection. Real processes, real NATS."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.demo import sample_batch
from deploy.servers import alive, free_port
from gateway.__main__ import shared_socket
from tests.stacks import Stack, metric, own_stack

SCORED = (
    'fraudmesh_http_requests_total{app_name="fraudmesh-gateway",method="POST",path="/score/fraud",status_code="200"}'
)


@pytest.fixture(scope="module")
def two_gateways(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    with own_stack(tmp_path_factory.mktemp("gw2"), redis_url, postgres_dsn, model_dir, gateways=2) as s:
        yield s


def scored(port: int) -> float:
    """The gateway's count of 200 answers on POST /score/fraud, read from its own metrics port."""
    return metric(port, SCORED)


def score_on_new_connections(url: str, n: int) -> list[int]:
    """`n` scores, each on a connection of its own (the kernel picks a listener per connection)."""
    statuses = []
    for tx in sample_batch(n, seed=5):
        tx.pop("transaction_id", None)
        with httpx.Client(base_url=url, timeout=10) as client:
            statuses.append(client.post("/score/fraud", json=tx).status_code)
    return statuses


def test_two_gateways_share_one_port_and_each_reports_its_own_metrics(two_gateways: Stack) -> None:
    gateways = [p for p in two_gateways.procs if p.name == "gateway"]
    assert len(gateways) == 2 and all(alive(p.pid) and p.metrics_port for p in gateways)
    assert len({p.http_port for p in gateways}) == 1
    before = [scored(p.metrics_port) for p in gateways]
    assert score_on_new_connections(two_gateways.gateway_url, 60) == [200] * 60
    took = [scored(p.metrics_port) - b for p, b in zip(gateways, before, strict=True)]
    assert sum(took) == 60, took  # every answer counted once, by the process that gave it
    assert min(took) > 0, f"one gateway got every connection: {took}"


def test_a_killed_gateway_leaves_the_port_to_the_other(two_gateways: Stack) -> None:
    gateways = [p for p in two_gateways.procs if p.name == "gateway"]
    victim, survivor = gateways[1], gateways[0]
    two_gateways.kill(victim, signal.SIGKILL)
    assert not alive(victim.pid)
    before = scored(survivor.metrics_port)
    assert score_on_new_connections(two_gateways.gateway_url, 40) == [200] * 40  # no refused or reset connection
    assert scored(survivor.metrics_port) - before == 40


async def test_connections_on_the_shared_socket_send_without_nagle() -> None:
    # asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP; a reply written in two parts
    # (headers, then body) would otherwise wait for the client's delayed ACK
    sock = shared_socket("127.0.0.1", free_port())
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            s = transport.get_extra_info("socket")
            nodelay.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
