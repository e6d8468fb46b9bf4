"""The local stack: real servers plus N replicas of each service, in a project-local run directory.

`fraudmesh up` starts nats-server (JetStream, users with per-service permissions: deploy/nats_auth.py),
redis-server (persistent) and PostgreSQL on loopback ports, makes sure a model of each family exists (and loads
the personalization features of its world into Redis: deploy/personalization.py), starts the services as
detached processes with their logs in files, waits until the gateway says it is ready, and writes `stack.json`
(ports, pids, logs; 0600, it holds the NATS admin URL) so that `fraudmesh down` and `fraudmesh restart NAME`
can act on it. The caller's FRAUDMESH_* settings reach every service; the stack sets only what it must (store
URLs, NATS credentials, ports, instance ids).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from deploy import nats_auth
from deploy.personalization import Provisioned
from deploy.servers import (
    Server,
    ServerError,
    alive,
    free_port,
    port_is_free,
    start_nats,
    start_postgres,
    start_redis,
    stop_postgres,
    write_private,
)

SERVICE_MODULES = {
    "gateway": "gateway",
    "aggregator": "aggregator",
    "inference": "inference_svc",
    "feature": "feature_svc",
}
START_ORDER = ("aggregator", "inference", "feature", "gateway")


@dataclass
class ServiceProc:
    name: str
    index: int
    pid: int
    log: str
    metrics_port: int = 0
    http_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    """Settings given to this instance only (kept so that a restart starts it the same way)."""

    @property
    def label(self) -> str:
        return f"{self.name}-{self.index}"


@dataclass
class StackState:
    run_dir: str
    nats_url: str = ""
    """The operator's URL: with the NATS admin's credentials when the server runs with auth."""
    nats_monitor: str = ""
    redis_url: str = ""
    postgres_dsn: str = ""
    gateway_url: str = ""
    servers: dict[str, dict[str, object]] = field(default_factory=dict)
    services: list[ServiceProc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """The caller's FRAUDMESH_* settings, passed to every service."""

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / "stack.json"

    def save(self) -> None:
        write_private(self.path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> StackState | None:
        p = run_dir / "stack.json"
        if not p.exists():
            return None
        raw = json.loads(p.read_text())
        raw["services"] = [ServiceProc(**s) for s in raw.get("services", [])]
        return cls(**raw)

    def service_env(self, service: str = "") -> dict[str, str]:
        """What the stack must set: store URLs and the model dir; for `service`, its own NATS user (derived
        from the admin's credentials in `nats_url`); without one, the admin's URL (for the CLI)."""
        env = {
            "FRAUDMESH_NATS_URL": self.nats_url,
            "FRAUDMESH_REDIS_URL": self.redis_url,
            "FRAUDMESH_POSTGRES_DSN": self.postgres_dsn,
            "FRAUDMESH_MODEL_DIR": str(Path(self.run_dir) / "models"),
        }
        user, secret = nats_auth.credentials_of(self.nats_url)
        if service and user == nats_auth.ADMIN:
            env["FRAUDMESH_NATS_URL"] = nats_auth.strip_credentials(self.nats_url)
            env["FRAUDMESH_NATS_USER"] = service
            env["FRAUDMESH_NATS_PASSWORD"] = nats_auth.password(secret, service)
        return env


def _port(preferred: int) -> int:
    return preferred if preferred and port_is_free(preferred) else free_port()


def start_service(
    state: StackState,
    name: str,
    index: int,
    extra_env: dict[str, str] | None = None,
    http_port: int = 0,
    metrics_port: int | None = None,
) -> ServiceProc:
    """Start one instance. Its settings, lowest priority first: the stack's pass-through FRAUDMESH_* (the
    caller's, `state.env`; never this process's own environment), what the stack must set, `extra_env`."""
    logs = Path(state.run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}-{index}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDMESH_")}
    env.update(state.env)
    env.update(state.service_env(name))
    if metrics_port is None:
        metrics_port = free_port()  # gateways too: several of them share the HTTP port, each scraped on its own
    env["FRAUDMESH_INSTANCE_ID"] = f"{name}-{index}"
    if metrics_port:
        env["FRAUDMESH_METRICS_PORT"] = str(metrics_port)
    if http_port:
        env["FRAUDMESH_HTTP_PORT"] = str(http_port)
        env["FRAUDMESH_HTTP_REUSE_PORT"] = "true"  # the stack's gateways share their port (SO_REUSEPORT)
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", SERVICE_MODULES[name]],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    return ServiceProc(
        name=name,
        index=index,
        pid=proc.pid,
        log=str(log),
        metrics_port=metrics_port,
        http_port=http_port,
        env=dict(extra_env or {}),
    )


def stop_service(svc: ServiceProc, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(svc.pid, sig)
    end = time.monotonic() + timeout
    while time.monotonic() < end and alive(svc.pid):
        time.sleep(0.05)
    if alive(svc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGKILL)


def ensure_model(model_dir: Path) -> str:
    if (model_dir / "active").exists():
        return (model_dir / "active").read_text().strip()
    from inference_svc.bootstrap import train_bootstrap

    return train_bootstrap(model_dir).version


def provision_personalization(state: StackState) -> Provisioned:
    """The personalization family's model (the bootstrap one when none is active) and its features in Redis, with
    the settings the services get (the caller's, then the stack's: its model dir and Redis)."""
    from deploy.personalization import provision
    from shared.settings import load_settings

    return provision(load_settings({**state.env, **state.service_env()}))


def wait_ready(url: str, timeout: float, procs: list[ServiceProc]) -> None:
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        dead = [p for p in procs if not alive(p.pid)]
        if dead:
            p = dead[0]
            tail = Path(p.log).read_text(errors="replace")[-2000:] if Path(p.log).exists() else ""
            raise ServerError(f"{p.name}-{p.index} exited during start; last lines of {p.log}:\n{tail}")
        try:
            r = httpx.get(f"{url}/ready", timeout=2.0)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise ServerError(f"the gateway at {url} was not ready within {timeout:.0f}s: {last}")


def caller_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's FRAUDMESH_* settings, checked now (a typo fails here, with the variable's name, rather than
    in every service's log)."""
    from shared.settings import PREFIX, SettingsError, load_settings

    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k.startswith(PREFIX)}
    try:
        load_settings(env)
    except SettingsError as exc:
        raise ServerError(str(exc)) from None
    return env


def up(
    run_dir: Path,
    replicas: dict[str, int],
    http_port: int = 8000,
    ports: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    echo: bool = True,
    env: dict[str, str] | None = None,
) -> StackState:
    """Start the stack. `env`: settings for every service (default: the caller's FRAUDMESH_* variables)."""
    run_dir = run_dir.resolve()
    existing = StackState.load(run_dir)
    if existing and any(alive(s.pid) for s in existing.services):
        raise ServerError(
            f"a stack is already running from {run_dir} (see {existing.path}); run `fraudmesh down` first"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o755)
    ports = ports or {}
    say = print if echo else (lambda *a, **k: None)
    state = StackState(run_dir=str(run_dir), env=caller_settings(env))
    say("starting nats-server (JetStream), redis-server and PostgreSQL ...", flush=True)
    nats = start_nats(run_dir / "nats", _port(ports.get("nats", 4222)), _port(ports.get("nats_monitor", 8222)))
    redis = start_redis(run_dir / "redis", _port(ports.get("redis", 6379)))
    pg = start_postgres(run_dir / "postgres", _port(ports.get("postgres", 5432)))
    state.nats_url, state.nats_monitor = nats.extra["url"], f"http://127.0.0.1:{nats.extra['monitor']}"
    state.redis_url, state.postgres_dsn = redis.extra["url"], pg.extra["dsn"]
    for srv in (nats, redis, pg):
        _record(state, srv)
    state.save()
    version = ensure_model(run_dir / "models")
    say(f"model: {version}", flush=True)
    pers = provision_personalization(state)
    say(
        f"personalization model: {pers.version} ({pers.kind}, from the {pers.source}"
        f"{', just trained' if pers.trained else ''}); "
        f"{pers.feature_rows} user/item/session feature rows loaded into Redis",
        flush=True,
    )
    gw_port = _port(http_port)
    state.gateway_url = f"http://127.0.0.1:{gw_port}"
    for name in START_ORDER:
        for i in range(replicas.get(name, 0)):
            state.services.append(
                start_service(state, name, i, extra_env, http_port=gw_port if name == "gateway" else 0)
            )
            state.save()
    say("services: " + ", ".join(f"{n} x{replicas.get(n, 0)}" for n in START_ORDER), flush=True)
    if replicas.get("gateway"):
        wait_ready(state.gateway_url, 60.0, state.services)
        for gw in (s for s in state.services if s.name == "gateway" and s.metrics_port):
            wait_service_ready(gw, 60.0)  # each one: the port answers as soon as ANY gateway listens
    return state


def _record(state: StackState, srv: Server) -> None:
    extra = {k: v for k, v in srv.extra.items() if k != "secret"}  # the secret is in its own 0600 file
    pid = srv.proc.pid if srv.proc else srv.pid
    state.servers[srv.name] = {"port": srv.port, "pid": pid, "log": str(srv.log), **extra}


def _server(state: StackState, name: str) -> Server | None:
    info = state.servers.get(name)
    if not info:
        return None
    keep = {k: str(v) for k, v in info.items() if k not in ("port", "pid", "log")}
    return Server(name, int(str(info["port"])), Path(str(info["log"])), pid=int(str(info["pid"])), extra=keep)


def _stop_server(srv: Server) -> None:
    if srv.name == "postgres":
        stop_postgres(srv)
    else:
        srv.stop()


def down(run_dir: Path, echo: bool = True) -> bool:
    state = StackState.load(run_dir.resolve())
    if state is None:
        if echo:
            print(f"no stack recorded in {run_dir}")
        return False
    # services first (gateway first, so no new work arrives), then the servers they depend on
    for svc in sorted(state.services, key=lambda s: s.name != "gateway"):
        stop_service(svc)
    for name in ("nats", "redis", "postgres"):
        srv = _server(state, name)
        if srv is not None:
            _stop_server(srv)
    state.services = []
    state.servers = {}
    state.save()
    if echo:
        print("stopped")
    return True


SERVERS = ("nats", "redis", "postgres")


def restart(run_dir: Path, name: str, timeout: float = 60.0) -> str:
    """Restart one server (nats, redis, postgres) or one service instance (e.g. `inference-0`) of the local
    stack, on the same ports, with the same data and settings. Returns what was done, in words."""
    state = StackState.load(run_dir.resolve())
    if state is None or not (state.servers or state.services):
        raise ServerError(f"no stack running from {run_dir}; start one with `fraudmesh up`")
    if name in SERVERS:
        return _restart_server(state, name, timeout)
    svc = next((s for s in state.services if s.label == name), None)
    if svc is None:
        known = [*SERVERS, *(s.label for s in state.services)]
        raise ServerError(f"nothing called {name!r} in this stack; choose one of: {', '.join(known)}")
    stop_service(svc)
    new = start_service(state, svc.name, svc.index, svc.env, http_port=svc.http_port, metrics_port=svc.metrics_port)
    state.services[state.services.index(svc)] = new
    state.save()
    if svc.name == "gateway":
        wait_ready(state.gateway_url, timeout, [new])
    if new.metrics_port:
        wait_service_ready(new, timeout)
    return f"{name} restarted (pid {new.pid}, log {new.log})"


def _restart_server(state: StackState, name: str, timeout: float) -> str:
    old = _server(state, name)
    if old is None:
        raise ServerError(f"{name} is not part of this stack")
    _stop_server(old)
    root = Path(state.run_dir) / name
    if name == "nats":
        new = start_nats(root, old.port, int(old.extra.get("monitor") or 0) or None)
    elif name == "redis":
        new = start_redis(root, old.port)
    else:
        new = start_postgres(root, old.port)
    _record(state, new)
    state.save()
    if any(s.name == "gateway" for s in state.services):
        wait_ready(state.gateway_url, timeout, [s for s in state.services if s.name == "gateway"])
    return f"{name} restarted on port {new.port} (pid {state.servers[name]['pid']})"


def wait_service_ready(proc: ServiceProc, timeout: float) -> None:
    """Until the instance's own /readyz (metrics port) says it is connected and subscribed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(proc.pid):
            tail = Path(proc.log).read_text(errors="replace")[-2000:]
            raise ServerError(f"{proc.label} exited during start; last lines of {proc.log}:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{proc.metrics_port}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ServerError(f"{proc.label} was not ready within {timeout:.0f}s; see {proc.log}")
