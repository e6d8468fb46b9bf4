"""The operator's side of the model registry (the `fraudmesh model` CLI and the trainer): publishing versions,
listing them, writing the KV state, and asking the workers over `fraud.model.control`.

The worker's side (reading the state, fetching versions) is inference_svc/registry.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError

from inference_svc.registry import (
    FRAUD,
    KEY_CANDIDATE,
    KEY_SHARE,
    MANIFEST,
    REQUIRED_FILES,
    Manifest,
    ManifestFile,
    Registry,
    RegistryError,
    VersionNotFound,
    check_version,
    is_local,
    local_files,
    local_versions,
    state_key,
)
from shared import subjects
from shared.messages import Codec, HealthPing
from shared.model_messages import ModelControlReply


class VersionInfo(msgspec.Struct, kw_only=True):
    version: str
    local: bool = False
    published: bool = False
    kind: str = ""
    created_at: str = ""
    size: int = 0
    metrics: dict[str, object] = {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def metadata_summary(raw: bytes) -> dict[str, object]:
    """kind, created_at, feature count and the scalar metrics of a metadata.json, for listings."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    metrics = doc.get("metrics") or {}
    return {
        "family": doc.get("family") or FRAUD,
        "kind": doc.get("kind", ""),
        "created_at": doc.get("created_at", ""),
        "features": len(doc.get("feature_names") or []),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
    }


def _metrics(summary: dict[str, object]) -> dict[str, object]:
    metrics = summary.get("metrics")
    return dict(metrics) if isinstance(metrics, dict) else {}


class RegistryAdmin(Registry):
    """A `Registry` that can also publish versions and write the A/B state (`set_active`, `exists` and `delete`
    are the Registry's own: an inference worker carries them out for the gateway's admin routes)."""

    async def set_candidate(self, version: str, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise RegistryError(f"share {share} is not between 0 and 1")
        kv = await self.state_kv()
        await kv.put(state_key(self.family, KEY_SHARE), repr(float(share)).encode())
        await kv.put(state_key(self.family, KEY_CANDIDATE), check_version(version).encode())

    async def clear_candidate(self) -> None:
        kv = await self.state_kv()
        for key in (KEY_CANDIDATE, KEY_SHARE):
            with contextlib.suppress(KeyNotFoundError):
                await kv.delete(state_key(self.family, key))

    async def published_versions(self) -> list[Manifest]:
        """The family's published versions."""
        return await self.published()

    async def publish(self, version: str) -> Manifest:
        """Upload a local version (every file of its directory), manifest last. Files the store already holds
        with the same content are not uploaded again."""
        check_version(version)
        base = self.model_dir / version
        if not is_local(self.model_dir, version):
            raise VersionNotFound(
                f"model version {version!r} is not in {self.model_dir} (it needs {' and '.join(REQUIRED_FILES)})"
            )
        obs = await self.objects()
        old = await self.manifest(version)
        old_sha = {f.name: f.sha256 for f in old.files} if old else {}
        files = []
        for path in local_files(base):
            rel = path.relative_to(base).as_posix()
            sha = await asyncio.to_thread(_sha256, path)
            files.append(ManifestFile(name=rel, size=path.stat().st_size, sha256=sha))
            if old_sha.get(rel) == sha:
                continue
            with path.open("rb") as fh:
                await obs.put(f"{version}/{rel}", fh)
        if old is not None and [(f.name, f.sha256) for f in old.files] == [(f.name, f.sha256) for f in files]:
            return old  # already published as it is
        manifest = Manifest(
            version=version,
            files=files,
            published_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            summary=metadata_summary((base / "metadata.json").read_bytes()),
        )
        await obs.put(f"{version}/{MANIFEST}", msgspec.json.encode(manifest))
        return manifest

    async def list_versions(self) -> list[VersionInfo]:
        out: dict[str, VersionInfo] = {}
        for m in await self.published_versions():
            s = m.summary
            out[m.version] = VersionInfo(
                version=m.version,
                published=True,
                kind=str(s.get("kind", "")),
                created_at=str(s.get("created_at", "")),
                size=sum(f.size for f in m.files),
                metrics=_metrics(s),
            )
        for v in local_versions(self.model_dir):
            info = out.get(v) or VersionInfo(version=v)
            info.local = True
            if not info.kind:
                s = metadata_summary((self.model_dir / v / "metadata.json").read_bytes())
                info.kind, info.created_at = str(s.get("kind", "")), str(s.get("created_at", ""))
                info.metrics = _metrics(s)
                info.size = sum(p.stat().st_size for p in local_files(self.model_dir / v))
            out[v] = info
        return sorted(out.values(), key=lambda i: (i.created_at, i.version))


# ------------------------------------------------------------------------------------ operator side (CLI)


async def count_workers(nc: Any, window_s: float = 0.4) -> int:
    """How many inference workers answer their health subject within `window_s`."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subjects.health_subject("inference"), Codec().encode(HealthPing()), reply=inbox)
        return len(await _gather(sub, expect=0, window_s=window_s))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def broadcast(
    nc: Any,
    request: object,
    *,
    expect: int,
    timeout_s: float,
    subject: str = subjects.MODEL_CONTROL,
    reply_type: Any = ModelControlReply,
) -> list[object]:
    """Publish a control request on `subject` (`fraud.model.control`; `personalization.model.control` with its
    `reply_type`) and gather the workers' answers: until `expect` have answered (then a short grace for more) or
    `timeout_s` passes; with `expect` 0, for half a second."""
    codec = Codec()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        deadline_ms = int((time.time() + timeout_s) * 1000)
        await nc.publish(
            subject,
            codec.encode(request),
            reply=inbox,
            headers={subjects.HDR_DEADLINE: str(deadline_ms)},
        )
        raw = await _gather(sub, expect=expect, window_s=timeout_s if expect else 0.5)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    out: list[object] = []
    for data in raw:
        try:
            out.append(codec.decoder(reply_type).decode(data))
        except msgspec.DecodeError as exc:
            out.append(RegistryError(f"undecodable reply: {exc}"))
    return out


async def _gather(sub: Any, *, expect: int, window_s: float, grace_s: float = 0.2) -> list[bytes]:
    out: list[bytes] = []
    end = time.monotonic() + window_s
    while (left := end - time.monotonic()) > 0:
        try:
            msg = await sub.next_msg(timeout=left)
        except (TimeoutError, NatsTimeoutError):
            break
        if not msg.data:  # a "no responders" status (nobody listens on the subject), not an answer
            continue
        out.append(msg.data)
        if expect and len(out) >= expect:
            end = min(end, time.monotonic() + grace_s)
    return out
