"""Drive the gateway with wrk (C, event-driven, keep-alive) and read back the JSON line of wrk_report.lua."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import SUMMARY_QUANTILES, qkey

LUA_SCRIPT = Path(__file__).with_name("wrk_report.lua")
MARKER = "WRK_JSON "


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkParams:
    connections: int
    threads: int
    duration_s: float
    timeout_s: float = 10.0

    def args(self) -> list[str]:
        return [
            "-t",
            str(self.threads),
            "-c",
            str(self.connections),
            "-d",
            f"{self.duration_s:g}s",
            "--timeout",
            f"{self.timeout_s:g}s",
            "--latency",
        ]


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu)")
    return path


def write_bodies(path: Path, bodies: list[str]) -> Path:
    """One JSON document per line, as wrk_report.lua reads them."""
    if any("\n" in b for b in bodies):
        raise ValueError("bodies must be single-line JSON")
    path.write_text("\n".join(bodies) + "\n")
    return path


def parse_output(stdout: str) -> dict[str, Any]:
    """The WRK_JSON line, with latencies converted to ms and the summary quantiles lifted to the top."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise WrkError(f"wrk printed no {MARKER.strip()} line:\n{stdout[-2000:]}")
    raw = json.loads(line[len(MARKER) :])
    lat = raw["latency_us"]
    pct_ms = {float(q): v / 1000.0 for q, v in lat["percentiles"].items()}
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    latency: dict[str, float] = {
        "count": float(raw["requests"]),
        "min": lat["min"] / 1000.0,
        "mean": lat["mean"] / 1000.0,
    }
    for q in SUMMARY_QUANTILES:
        latency[qkey(q)] = pct_ms[q]
    latency["max"] = lat["max"] / 1000.0
    return {
        "requests": raw["requests"],
        "duration_s": seconds,
        "rps": raw["requests"] / seconds if seconds > 0 else 0.0,
        "errors": {**errors, "total": sum(errors.values())},
        "latency_ms": latency,
        "cdf": sorted((ms, q) for q, ms in pct_ms.items()),
    }


def run_wrk(url: str, params: WrkParams, bodies_file: Path | None = None, api_key: str = "") -> dict[str, Any]:
    cmd = [
        wrk_binary(),
        *params.args(),
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(bodies_file) if bodies_file else "",
        api_key,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=params.duration_s + params.timeout_s + 30)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    out = parse_output(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out["client"] = {"tool": "wrk", "cpu_s": cpu, "cpu_cores": cpu / wall if wall > 0 else 0.0}
    out["params"] = {
        "connections": params.connections,
        "threads": params.threads,
        "duration_s": params.duration_s,
        "timeout_s": params.timeout_s,
        "url": url,
        "bodies": str(bodies_file) if bodies_file else None,
    }
    out["raw"] = "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith(MARKER))
    return out
