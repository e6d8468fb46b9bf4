"""Seed 001's service (lich2000117/streaming-feature-store, folder `inference/`) run beside fraudmesh, for the bench.

Its code never enters this repository: `prepare` exports `inference/` and `training/outputs/` from the bare git
mirror into a directory under /tmp and builds a venv there with its own requirements (pip, from PyPI). `start`
gives it a redis-server of its own on a free port holding 10,000 cards as `features:card:{card_id}:transaction`
hashes of its `training/outputs/feature_names.json`, starts it as it was run for issue 12
(`OMP_NUM_THREADS=1 uvicorn app:app --app-dir inference --workers 2`, plus `--no-access-log`, which only helps
it), waits for `GET /ready` and gives the URL. The benchmark calls it over HTTP only.

    python -m bench.peer                 # prepare, start, print the URL, serve until Ctrl-C
    python -m bench --up --peer auto     # the same, inside one benchmark run (stopped at the end)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DEFAULT_MIRROR = Path("/work/.mirror/lich2000117+streaming-feature-store/repo")
DEFAULT_ROOT = Path("/tmp/fraudmesh-peer")
CARDS = 10_000
FIRST_CARD = 1000
"""Seed 001's generator names cards `card_{i:08d}` from 1000 up (generators/txgen.py)."""


class PeerError(RuntimeError):
    pass


def card_id(i: int) -> str:
    return f"card_{FIRST_CARD + i:08d}"


def _run(cmd: list[str], what: str, **kw: Any) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise PeerError(f"{what} failed ({' '.join(cmd[:4])} ...): {proc.stderr.strip()[-1500:]}")


def prepare(root: Path = DEFAULT_ROOT, mirror: Path = DEFAULT_MIRROR, python: str = "python3.11") -> Path:
    """`root/src` (the service's files, from the mirror's HEAD) and `root/venv` (its requirements). Idempotent."""
    src, venv = root / "src", root / "venv"
    if not (src / "inference" / "app.py").is_file():
        if not mirror.is_dir():
            raise PeerError(
                f"seed 001's repository is not at {mirror}: fetch github:lich2000117/streaming-feature-store "
                "(a bare git dir) or pass --peer-mirror"
            )
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", f"--git-dir={mirror}", "archive", "HEAD", "inference", "training/outputs"],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            raise PeerError(f"git archive of {mirror} failed: {archive.stderr.decode(errors='replace')[-500:]}")
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    if not (venv / "bin" / "uvicorn").is_file():
        print(f"[peer] building {venv} with seed 001's requirements (pip, a few minutes) ...", flush=True)
        _run([python, "-m", "venv", str(venv)], "creating the peer's venv")
        _run(
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(src / "inference" / "requirements.txt")],
            "installing seed 001's requirements",
        )
    return root


def card_features(names: list[str], rng: random.Random) -> dict[str, str]:
    """One card's hash, typed as the service parses it: ints, floats with a dot, `true`/`false`."""
    out: dict[str, str] = {}
    count5 = rng.randint(0, 6)
    for n in names:
        if n.startswith(("is_", "has_")):
            out[n] = "true" if rng.random() < 0.1 else "false"
        elif n == "txn_count_5m":
            out[n] = str(count5)
        elif n == "txn_count_30m":
            out[n] = str(count5 + rng.randint(0, 10))
        elif n == "txn_count_24h":
            out[n] = str(count5 + rng.randint(0, 60))
        elif n == "hour_of_day":
            out[n] = str(rng.randint(0, 23))
        elif n == "unique_countries_5m":
            out[n] = str(rng.randint(1, 3))
        elif n.startswith("amount_") and n != "amount_zscore":
            out[n] = f"{rng.lognormvariate(3.5, 1.0):.2f}"
        elif n == "amount_zscore":
            out[n] = f"{rng.gauss(0.0, 1.0):.3f}"
        elif n == "time_since_last_txn_min":
            out[n] = f"{rng.expovariate(1 / 90):.2f}"
        else:  # ratios and scores
            out[n] = f"{rng.random():.4f}"
    out["entity_id"] = ""
    out["feature_timestamp"] = str(int(time.time() * 1000))
    return out


def write_cards(port: int, names: list[str], n: int = CARDS, seed: int = 1) -> int:
    import redis

    rng = random.Random(seed)
    r = redis.Redis(host="127.0.0.1", port=port)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            cid = card_id(i)
            fields: dict[Any, Any] = {**card_features(names, rng), "entity_id": cid}
            pipe.hset(f"features:card:{cid}:transaction", mapping=fields)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        return int(r.dbsize())
    finally:
        r.close()


@dataclass
class Peer:
    url: str
    root: Path
    redis_port: int
    cards: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    command: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "service": "seed 001 (lich2000117/streaming-feature-store, inference/)",
            "command": self.command,
            "cards": self.cards,
            "redis_port": self.redis_port,
            "pids": {n: p.pid for n, p in zip(("redis", "uvicorn"), self.procs, strict=False)},
        }

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        self.procs.clear()


def _free_port() -> int:
    from deploy.servers import free_port

    return int(free_port())


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0) -> None:
    end, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise PeerError(f"seed 001's service exited {proc.returncode}; its log {log}:\n{log.read_text()[-1500:]}")
        try:
            r = httpx.get(f"{url}/ready", timeout=2.0)
            if r.status_code == 200 and r.json().get("ready"):
                return
            last = r.text
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise PeerError(f"seed 001's service at {url} was not ready in {timeout_s:.0f} s ({last}); its log: {log}")


def start(root: Path = DEFAULT_ROOT, cards: int = CARDS, workers: int = 2, port: int = 0) -> Peer:
    """Its own redis-server with `cards` cards, then the service; returns when `GET /ready` says ready."""
    src, venv = root / "src", root / "venv"
    if not (venv / "bin" / "uvicorn").is_file():
        raise PeerError(f"no peer venv in {root}: run `python -m bench.peer --prepare-only` first")
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise PeerError("redis-server is not installed")
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    rport = _free_port()
    rlog = run / "redis.log"
    redis_proc = subprocess.Popen(
        [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(run), "--logfile", str(rlog)],
        start_new_session=True,
    )  # fmt: skip
    peer = Peer(url="", root=root, redis_port=rport, cards=cards, procs=[redis_proc])
    try:
        names = json.loads((src / "training" / "outputs" / "feature_names.json").read_text())
        for _ in range(50):
            try:
                written = write_cards(rport, names, cards)
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        else:
            raise PeerError(f"the peer's redis-server on port {rport} did not answer; its log: {rlog}")
        if written < cards:
            raise PeerError(f"only {written} of {cards} cards reached the peer's Redis")
        hport = port or _free_port()
        cmd = [str(venv / "bin" / "uvicorn"), "app:app", "--app-dir", "inference", "--workers", str(workers),
               "--host", "127.0.0.1", "--port", str(hport), "--no-access-log"]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(rport)}
        env.pop("PYTHONPATH", None)
        log = run / "service.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, cwd=src, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        peer.procs.append(proc)
        peer.url = f"http://127.0.0.1:{hport}"
        peer.command = "OMP_NUM_THREADS=1 " + " ".join(["uvicorn", *cmd[1:]])
        _wait_ready(peer.url, proc, log)
    except BaseException:
        peer.stop()
        raise
    return peer


def single_bodies(n: int, seed: int = 7, offset: int = 0, cards: int = CARDS) -> list[dict[str, Any]]:
    """`POST /score/fraud` bodies for cards that are in the peer's Redis (`offset` picks a disjoint range)."""
    rng = random.Random(seed)
    mccs = ("5411", "5812", "5999", "4829", "5732", "7995", "5912", "6011")
    countries = ("US", "US", "US", "GB", "CA", "DE", "FR", "NG")
    return [
        {
            "card_id": card_id((offset + i) % cards),
            "transaction_amount": round(rng.lognormvariate(3.5, 1.0), 2),
            "merchant_id": f"merchant_{rng.randint(1, 2000):06d}",
            "mcc_code": rng.choice(mccs),
            "country_code": rng.choice(countries),
            "ip_address": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        }
        for i in range(n)
    ]


def batch_body(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """`POST /score/batch` (at most 1,000 requests: the service refuses more)."""
    return {"model_type": "fraud_detection", "requests": requests, "batch_id": "bench"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"where its files and venv go ({DEFAULT_ROOT})")
    p.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="the bare git dir of seed 001's repository")
    p.add_argument("--cards", type=int, default=CARDS)
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--prepare-only", action="store_true", help="build the venv and stop")
    args = p.parse_args(argv)
    try:
        prepare(args.root, args.mirror)
        if args.prepare_only:
            print(f"seed 001's service is prepared in {args.root}")
            return 0
        peer = start(args.root, args.cards, port=args.port)
    except PeerError as exc:
        print(f"bench.peer: {exc}", file=sys.stderr)
        return 1
    print(f"seed 001's service is ready at {peer.url} ({peer.cards} cards in Redis on port {peer.redis_port})")
    print(f"benchmark it beside fraudmesh: python -m bench --peer {peer.url}   (Ctrl-C here stops it)", flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
