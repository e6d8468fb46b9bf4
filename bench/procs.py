"""CPU seconds of the stack's processes from /proc, so a report shows where the two cores went."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(ppid: int) -> dict[int, float]:
    """CPU seconds of each live child of `ppid` (PostgreSQL's backends are children of its postmaster)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ppid:
            out[int(d.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        s = cpu_seconds(pid)
        if s is not None:
            out[name] = s
    return out


def diff(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Cores used by each process over `wall_s` (1.0 = one full core)."""
    return {k: round((after[k] - before[k]) / wall_s, 3) for k in after if k in before and wall_s > 0}


def environ(pid: int, prefix: str = "FRAUDMESH_") -> dict[str, str]:
    """The `prefix` variables of a running process (readable for our own processes)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, _, v = item.decode(errors="replace").partition("=")
        if k.startswith(prefix):
            out[k] = v
    return out
