"""`python -m gateway`: the Litestar app on uvicorn (uvloop, httptools), with the project's JSON logs."""

from __future__ import annotations

import contextlib
import socket
import sys

import uvicorn
from prometheus_client import REGISTRY

from gateway.app import create_app
from gateway.bridge import NatsBridge
from gateway.front_door import FrontDoor, door_protocol
from gateway.queue_delay import QueueDelay
from shared.logs import configure_logging
from shared.metrics import serve_metrics
from shared.settings import SettingsError, load_settings, parse_cli
from shared.telemetry import setup_tracing


def main(argv: list[str] | None = None) -> None:
    parse_cli("python -m gateway", "The fraudmesh HTTP gateway: scoring, features and health over NATS.", argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fraudmesh: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    instance = settings.instance_id or "gateway"
    configure_logging("gateway", instance, settings.log_level)
    setup_tracing("fraudmesh-gateway", instance)
    bridge = NatsBridge(settings, name=instance)
    queue = QueueDelay(settings.admission_queue_target_ms / 1000.0, settings.admission_max_queue_ms / 1000.0)
    door = FrontDoor(create_app(settings, bridge), bridge.admission, queue)
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    config = uvicorn.Config(
        door,
        host=settings.http_host,
        port=settings.http_port,
        # asyncio's loop accepts every pending connection when the listening socket is readable; uvloop (libuv >= 1.45)
        # accepts one per loop iteration, so under load 512 new connections waited seconds to be accepted
        loop="asyncio",
        http=door_protocol(door),  # stamps when each request was read; refuses what admission refuses, at once
        access_log=False,
        log_config=None,  # keep the JSON handler configure_logging installed
        # X-Forwarded-For names the client only when the peer is a configured proxy (uvicorn would otherwise trust
        # it from 127.0.0.1, or from FORWARDED_ALLOW_IPS, by default)
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or [],
        timeout_graceful_shutdown=20,
    )
    if settings.metrics_port:  # this process's own metrics, also when several gateways share the HTTP port
        serve_metrics(REGISTRY, settings.metrics_port, lambda: bridge.nc is not None and bridge.nc.is_connected)
    server = uvicorn.Server(config)
    sockets = [shared_socket(settings.http_host, settings.http_port)] if settings.http_reuse_port else None
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the app or the port failed at start (the log says which)


def shared_socket(host: str, port: int) -> socket.socket:
    """The listening socket with SO_REUSEPORT: every gateway process on this host binds the same port and the
    kernel spreads new connections over those listening (a killed one's share goes to the others)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket says TCP; without it Nagle held
    # each response's body behind its headers until the client's delayed ACK (+40 ms per request, found by the bench)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(
            f"fraudmesh: cannot bind the gateway to {host}:{port} ({exc.strerror}); with FRAUDMESH_HTTP_REUSE_PORT "
            "every process on that port must set SO_REUSEPORT (another gateway of this stack does; anything else "
            "holding the port does not): free the port or choose another with FRAUDMESH_HTTP_PORT",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    main()
