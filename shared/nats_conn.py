"""One way to connect to NATS for every process: reconnect forever, short pings, retry the first connect,
with the process's credentials and TLS from its settings (FRAUDMESH_NATS_USER, _PASSWORD, _TLS_*)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as NATS

from shared.logs import log_fields
from shared.settings import Settings, load_settings

log = logging.getLogger("fraudmesh.nats")

SERVICE_INBOX_USERS = frozenset({"admin", "gateway", "aggregator", "inference", "feature"})


class NatsAuthError(RuntimeError):
    """NATS refused the credentials: retrying cannot help. The message says which user and what to check."""


def inbox_prefix(user: str) -> str:
    """Where replies to `user` arrive: `_INBOX_<user>` for the fraudmesh users (each may read only its own,
    deploy/nats_auth.py), the default `_INBOX` for anyone else (public clients)."""
    return f"_INBOX_{user}" if user in SERVICE_INBOX_USERS else "_INBOX"


def redact(urls: str) -> str:
    """`urls` without passwords, for logs and messages."""
    out = []
    for url in urls.split(","):
        parts = urlsplit(url)
        if "@" in parts.netloc:
            user = (parts.username or "") + ":***@" if parts.password else "***@"
            parts = parts._replace(netloc=user + parts.netloc.rsplit("@", 1)[-1])
        out.append(urlunsplit(parts))
    return ",".join(out)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context when a CA or a client certificate is set; None otherwise (a `tls://` URL then
    uses the system's CAs)."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=settings.nats_tls_ca or None)
    if settings.nats_tls_cert:
        ctx.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key or None)
    return ctx


def auth_options(settings: Settings) -> dict[str, Any]:
    """nats.py connect options for the credentials and TLS in `settings` (empty when none are set).
    Auth costs one CONNECT: nothing per message."""
    opts: dict[str, Any] = {}
    if settings.nats_user:
        opts["user"] = settings.nats_user
        opts["password"] = settings.nats_password
        opts["inbox_prefix"] = inbox_prefix(settings.nats_user)
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts


async def connect_nats(
    urls: str,
    name: str,
    *,
    on_disconnect: Callable[[], None] | None = None,
    on_reconnect: Callable[[], None] | None = None,
    first_connect_retries: int = -1,
    settings: Settings | None = None,
) -> NATS:
    """Connect with reconnect-forever. The first connect is retried too (start order must not matter);
    `first_connect_retries=-1` retries forever, which services want and tests may not. Refused credentials
    end it at once (NatsAuthError: a setting to fix, not an outage to wait out). Credentials and TLS come from
    `settings` (read from the environment when not given)."""
    settings = settings if settings is not None else load_settings()
    opts = auth_options(settings)
    opts["reconnect_time_wait"] = 0.5  # seconds (nats.py annotates it as int)
    first = _FirstConnect(first_connect_retries)

    async def on_error(exc: Exception) -> None:
        if first.active:
            first.failed(exc)
            log.warning("nats not reachable yet; retrying", extra=log_fields(url=redact(urls), error=repr(exc)))
        else:
            log.warning("nats error", extra=log_fields(error=repr(exc)))

    async def disconnected() -> None:
        log.warning("nats disconnected")
        if on_disconnect:
            on_disconnect()

    async def reconnected() -> None:
        log.info("nats reconnected")
        if on_reconnect:
            on_reconnect()

    nc = NATS()
    # nats.py retries a first connect for ever itself (it reconnects for ever): watch its errors to stop it
    connecting = asyncio.ensure_future(
        nc.connect(
            servers=urls.split(","),
            name=name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            ping_interval=5,
            max_outstanding_pings=3,
            connect_timeout=2,
            error_cb=on_error,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            pending_size=64 * 1024 * 1024,
            **opts,
        )
    )
    give_up = asyncio.ensure_future(first.give_up.wait())
    await asyncio.wait({connecting, give_up}, return_when=asyncio.FIRST_COMPLETED)
    give_up.cancel()
    first.active = False
    if connecting.done() and connecting.exception() is None:
        return nc
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(Exception):
        await nc.close()
    if first.refused:
        raise _auth_error(urls, settings)
    raise first.last or ConnectionError(f"cannot connect to NATS at {redact(urls)}")


class _FirstConnect:
    """The errors of a first connect: when to stop retrying it."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.active = True
        self.failures = 0
        self.refused = False
        self.last: Exception | None = None
        self.give_up = asyncio.Event()

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last = exc
        # sticky: the server closes the socket right after refusing, and nats.py may report that reset (a
        # ConnectionResetError) after the refusal, before the give-up is seen; it must not hide the refusal
        self.refused = self.refused or _is_auth_error(exc)
        if self.refused or 0 <= self.retries < self.failures:
            self.give_up.set()


def _is_auth_error(exc: BaseException) -> bool:
    return "authorization violation" in str(exc).lower()


def _auth_error(urls: str, settings: Settings) -> NatsAuthError:
    who = f"user {settings.nats_user!r}" if settings.nats_user else "a client without credentials"
    return NatsAuthError(
        f"NATS at {redact(urls)} refused {who} (Authorization Violation). Check FRAUDMESH_NATS_USER and "
        f"FRAUDMESH_NATS_PASSWORD (or the credentials in FRAUDMESH_NATS_URL); `fraudmesh nats-user NAME` prints "
        f"those of the local stack."
    )
