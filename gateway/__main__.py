"""`python -m gateway`: the Litestar app on uvicorn (uvloop, httptools), with JSON logs."""

from __future__ import annotations

import sys

import uvicorn

from gateway.app import create_app
from shared.logs import configure_logging
from shared.settings import SettingsError, load_settings
from shared.telemetry import setup_tracing


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fraudmesh: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    instance = settings.instance_id or "gateway"
    configure_logging("gateway", instance, settings.log_level)
    setup_tracing("fraudmesh-gateway", instance)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
