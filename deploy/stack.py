"""The local stack: real servers plus N replicas of each service, in a project-local run directory.

`fraudmesh up` starts nats-server (JetStream), redis-server and PostgreSQL on loopback ports, makes sure a
model exists, starts the services as detached processes with their logs in files, waits until the gateway
says it is ready, and writes `stack.json` (ports, pids, logs) so that `fraudmesh down` can stop it all.
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


@dataclass
class StackState:
    run_dir: str
    nats_url: str = ""
    nats_monitor: str = ""
    redis_url: str = ""
    postgres_dsn: str = ""
    gateway_url: str = ""
    servers: dict[str, dict[str, object]] = field(default_factory=dict)
    services: list[ServiceProc] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / "stack.json"

    def save(self) -> None:
        self.path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> StackState | None:
        p = run_dir / "stack.json"
        if not p.exists():
            return None
        raw = json.loads(p.read_text())
        raw["services"] = [ServiceProc(**s) for s in raw.get("services", [])]
        return cls(**raw)

    def service_env(self) -> dict[str, str]:
        return {
            "FRAUDMESH_NATS_URL": self.nats_url,
            "FRAUDMESH_REDIS_URL": self.redis_url,
            "FRAUDMESH_POSTGRES_DSN": self.postgres_dsn,
            "FRAUDMESH_MODEL_DIR": str(Path(self.run_dir) / "models"),
        }


def _port(preferred: int) -> int:
    return preferred if preferred and port_is_free(preferred) else free_port()


def start_service(
    state: StackState, name: str, index: int, extra_env: dict[str, str] | None = None, http_port: int = 0
) -> ServiceProc:
    logs = Path(state.run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}-{index}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDMESH_")}
    env.update(state.service_env())
    metrics_port = 0 if name == "gateway" else free_port()
    env["FRAUDMESH_INSTANCE_ID"] = f"{name}-{index}"
    if metrics_port:
        env["FRAUDMESH_METRICS_PORT"] = str(metrics_port)
    if http_port:
        env["FRAUDMESH_HTTP_PORT"] = str(http_port)
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
        name=name, index=index, pid=proc.pid, log=str(log), metrics_port=metrics_port, http_port=http_port
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


def up(
    run_dir: Path,
    replicas: dict[str, int],
    http_port: int = 8000,
    ports: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    echo: bool = True,
) -> StackState:
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
    state = StackState(run_dir=str(run_dir))
    say("starting nats-server (JetStream), redis-server and PostgreSQL ...", flush=True)
    nats = start_nats(run_dir / "nats", _port(ports.get("nats", 4222)), _port(ports.get("nats_monitor", 8222)))
    redis = start_redis(run_dir / "redis", _port(ports.get("redis", 6379)))
    pg = start_postgres(run_dir / "postgres", _port(ports.get("postgres", 5432)))
    state.nats_url, state.nats_monitor = nats.extra["url"], f"http://127.0.0.1:{nats.extra['monitor']}"
    state.redis_url, state.postgres_dsn = redis.extra["url"], pg.extra["dsn"]
    state.servers = {
        s.name: {"port": s.port, "pid": s.proc.pid if s.proc else s.pid, "log": str(s.log), **s.extra}
        for s in (nats, redis, pg)
    }
    state.save()
    version = ensure_model(run_dir / "models")
    say(f"model: {version}", flush=True)
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
    return state


def down(run_dir: Path, echo: bool = True) -> bool:
    state = StackState.load(run_dir.resolve())
    if state is None:
        if echo:
            print(f"no stack recorded in {run_dir}")
        return False
    # services first (gateway first, so no new work arrives), then the servers they depend on
    for svc in sorted(state.services, key=lambda s: s.name != "gateway"):
        stop_service(svc)
    for name in ("nats", "redis"):
        info = state.servers.get(name)
        if info:
            Server(name, int(str(info["port"])), Path(str(info["log"])), pid=int(str(info["pid"]))).stop()
    pg = state.servers.get("postgres")
    if pg:
        stop_postgres(
            Server(
                "postgres",
                int(str(pg["port"])),
                Path(str(pg["log"])),
                pid=int(str(pg["pid"])),
                extra={"data": str(pg["data"]), "bindir": str(pg["bindir"])},
            )
        )
    state.services = []
    state.servers = {}
    state.save()
    if echo:
        print("stopped")
    return True
