"""The model registry: model versions in the NATS Object Store and in the local model dir, and which version is
active (plus the A/B candidate and its share) in a NATS KV bucket, so that every worker on every host agrees.

Object Store bucket `fraudmesh_models`: every file of a version's directory as the object `<version>/<file>`
(model.onnx, metadata.json, and whatever else the trainer put there: encoder.onnx, embeddings.parquet, ...),
then `<version>/.manifest.json` (file names, sizes and SHA-256, and a metadata summary). The manifest is written
last, so a version is published exactly when its manifest exists.

KV bucket `fraudmesh_model_state` (plain UTF-8 values, history kept for `nats kv history`):
- `active`: the version every worker serves;
- `candidate`: the A/B candidate version (deleted when there is none);
- `candidate_share`: the fraction of partials routed to the candidate, e.g. `0.1`.
When the KV has no `active` entry (a fresh stack: `fraudmesh model init` only writes locally), workers serve the
local `<model_dir>/active` version: the bootstrap path needs no registry entry.

Several model families share both buckets. The fraud family's keys are the bare ones above; another family's are
prefixed by its name (`personalization.active`, `personalization.candidate`, ...: `state_key`), and its versions'
manifests say their family (`summary.family`, from metadata.json; none: fraud). A `Registry` is one family's view.

A/B routing is per partial and deterministic: `ab_point(request_id, index)` is a hash in [0, 1), and a partial
goes to the candidate when it is below the share, so a redelivered partial meets the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from shared import subjects

MODELS_BUCKET = subjects.MODEL_ARTIFACTS_BUCKET
STATE_BUCKET = subjects.MODEL_STATE_BUCKET
KEY_ACTIVE = "active"
KEY_CANDIDATE = "candidate"
KEY_SHARE = "candidate_share"
STATE_KEYS = (KEY_ACTIVE, KEY_CANDIDATE, KEY_SHARE)
MANIFEST = ".manifest.json"
REQUIRED_FILES = ("model.onnx", "metadata.json")
FRAUD = "fraud"
"""The first family: its KV keys carry no prefix (the layout of releases before families)."""


def state_key(family: str, key: str) -> str:
    """The KV key of one family's state key: `active` for fraud, `personalization.active` for personalization."""
    return key if family == FRAUD else f"{family}.{key}"


VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class RegistryError(RuntimeError):
    """A registry operation failed; the message says what and how to fix it."""


class VersionNotFound(RegistryError):
    pass


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise RegistryError(
            f"{version!r} is not a model version name (letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )
    return version


def ab_point(request_id: str, index: int) -> float:
    """Where a partial falls in [0, 1): the same for every worker and every delivery of the partial."""
    digest = hashlib.blake2b(f"{request_id}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def goes_to_candidate(request_id: str, index: int, share: float) -> bool:
    return share > 0.0 and ab_point(request_id, index) < share


# ------------------------------------------------------------------------------------------------ state


@dataclass(frozen=True)
class RegistryState:
    """What the KV says. Empty strings mean "no entry"."""

    active: str = ""
    candidate: str = ""
    candidate_share: float = 0.0
    revisions: tuple[int, int, int] = (0, 0, 0)
    """KV revision of `active`, `candidate` and `candidate_share` (0: never written)."""

    def with_key(self, key: str, value: str, revision: int) -> RegistryState:
        revs = list(self.revisions)
        revs[STATE_KEYS.index(key)] = revision
        if key == KEY_ACTIVE:
            return RegistryState(value, self.candidate, self.candidate_share, (revs[0], revs[1], revs[2]))
        if key == KEY_CANDIDATE:
            return RegistryState(self.active, value, self.candidate_share, (revs[0], revs[1], revs[2]))
        return RegistryState(self.active, self.candidate, parse_share(value), (revs[0], revs[1], revs[2]))

    def revision(self, key: str) -> int:
        return self.revisions[STATE_KEYS.index(key)]


def parse_share(value: str) -> float:
    try:
        share = float(value) if value else 0.0
    except ValueError:
        return 0.0
    return min(max(share, 0.0), 1.0) if share == share else 0.0


# --------------------------------------------------------------------------------------------- manifest


class ManifestFile(msgspec.Struct, kw_only=True):
    name: str
    size: int
    sha256: str


class Manifest(msgspec.Struct, kw_only=True):
    version: str
    files: list[ManifestFile]
    published_at: str = ""
    summary: dict[str, object] = {}


def local_files(version_dir: Path) -> list[Path]:
    """Every file of a version's directory (recursively), skipping hidden and temporary ones."""
    out = []
    for p in sorted(version_dir.rglob("*")):
        rel = p.relative_to(version_dir)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(p)
    return out


def is_local(model_dir: Path, version: str) -> bool:
    base = model_dir / version
    return all((base / f).is_file() for f in REQUIRED_FILES)


def local_versions(model_dir: Path) -> list[str]:
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir() and is_local(model_dir, p.name))


def local_active(model_dir: Path) -> str:
    marker = model_dir / "active"
    return marker.read_text().strip() if marker.is_file() else ""


# --------------------------------------------------------------------------------------------- registry


class Registry:
    """The object store and the KV of one NATS system, and one local model dir, for one model family."""

    def __init__(self, js: JetStreamContext, model_dir: Path, replicas: int = 1, family: str = FRAUD) -> None:
        self.js = js
        self.model_dir = Path(model_dir)
        self.replicas = replicas
        self.family = family
        self._obs: ObjectStore | None = None
        self._kv: KeyValue | None = None

    # ------------------------------------------------------------------------------ buckets
    async def objects(self) -> ObjectStore:
        if self._obs is None:
            try:
                self._obs = await self.js.object_store(MODELS_BUCKET)
            except BucketNotFoundError:
                config = ObjectStoreConfig(
                    description="fraudmesh model artifacts: <version>/<file>, then <version>/.manifest.json",
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                )
                try:
                    self._obs = await self.js.create_object_store(MODELS_BUCKET, config=config)
                except BadRequestError:  # created by someone else meanwhile, maybe with other settings
                    self._obs = await self.js.object_store(MODELS_BUCKET)
        return self._obs

    async def state_kv(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(STATE_BUCKET)
            except BucketNotFoundError:
                config = KeyValueConfig(
                    bucket=STATE_BUCKET,
                    description="fraudmesh model state: active, candidate, candidate_share",
                    history=16,
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                )
                try:
                    self._kv = await self.js.create_key_value(config)
                except BadRequestError:
                    self._kv = await self.js.key_value(STATE_BUCKET)
        return self._kv

    # ------------------------------------------------------------------------------ state
    async def read_entries(self) -> dict[str, tuple[str, int]]:
        """key -> (value, revision) for the family's state keys (by their bare names: `active`, ...): ('', revision)
        when deleted, ('', 0) when never written."""
        kv = await self.state_kv()
        out: dict[str, tuple[str, int]] = {}
        for key in STATE_KEYS:
            try:
                entry = await kv.get(state_key(self.family, key))
            except KeyNotFoundError as exc:  # never written, or deleted (then the marker has a revision)
                deleted = getattr(exc, "entry", None)
                out[key] = ("", (deleted.revision or 0) if deleted is not None else 0)
                continue
            out[key] = ((entry.value or b"").decode(), entry.revision or 0)
        return out

    async def read_state(self) -> RegistryState:
        state = RegistryState()
        for key, (value, revision) in (await self.read_entries()).items():
            state = state.with_key(key, value, revision)
        return state

    # ------------------------------------------------------------------------------ artifacts
    async def manifest(self, version: str) -> Manifest | None:
        obs = await self.objects()
        try:
            res = await obs.get(f"{check_version(version)}/{MANIFEST}")
        except NotFoundError:
            return None
        return msgspec.json.decode(res.data or b"{}", type=Manifest)

    async def published(self) -> list[Manifest]:
        """The manifests of the family's published versions (a manifest's summary names its family; none: fraud)."""
        obs = await self.objects()
        try:
            infos = await obs.list(ignore_deletes=True)
        except NotFoundError:  # an empty bucket
            return []
        out = []
        for info in infos:
            if info.name and info.name.endswith("/" + MANIFEST) and not info.deleted:
                m = await self.manifest(info.name.split("/", 1)[0])
                if m is not None and (m.summary.get("family") or FRAUD) == self.family:
                    out.append(m)
        return sorted(out, key=lambda m: m.version)

    async def fetch(self, version: str, manifest: Manifest | None = None) -> Path:
        """Download a published version into the local model dir (into a temporary directory first, then renamed,
        so a reader never sees half a version; several workers on one host may race, one wins)."""
        check_version(version)
        manifest = manifest or await self.manifest(version)
        if manifest is None:
            raise VersionNotFound(
                f"model version {version!r} is neither in {self.model_dir} nor published in the object store "
                f"bucket {MODELS_BUCKET} (see `fraudmesh model list`)"
            )
        obs = await self.objects()
        final = self.model_dir / version
        self.model_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.model_dir / f".fetch-{version}-{uuid.uuid4().hex[:8]}"
        try:
            for f in manifest.files:
                target = tmp / f.name
                if not target.resolve().is_relative_to(tmp.resolve()):
                    raise RegistryError(f"manifest of {version} names a file outside its directory: {f.name!r}")
                existing = final / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                if existing.is_file() and existing.stat().st_size == f.size:
                    await asyncio.to_thread(shutil.copy2, existing, target)
                    continue
                with target.open("wb") as fh:
                    await obs.get(f"{version}/{f.name}", writeinto=fh)  # the client checks the object's digest
                if target.stat().st_size != f.size:
                    raise RegistryError(f"{version}/{f.name}: got {target.stat().st_size} bytes, expected {f.size}")
            if final.exists():
                # a partial local copy (or one another worker just completed): replace it only when incomplete
                if self.local_complete(version, manifest):
                    return final
                old = self.model_dir / f".old-{version}-{uuid.uuid4().hex[:8]}"
                with contextlib.suppress(OSError):
                    final.rename(old)
                    shutil.rmtree(old, ignore_errors=True)
            try:
                tmp.rename(final)
            except OSError:
                if not self.local_complete(version, manifest):
                    raise
            return final
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def local_complete(self, version: str, manifest: Manifest | None) -> bool:
        if not is_local(self.model_dir, version):
            return False
        if manifest is None:
            return True
        base = self.model_dir / version
        return all((base / f.name).is_file() and (base / f.name).stat().st_size == f.size for f in manifest.files)

    async def set_active(self, version: str) -> int:
        """Write the `active` key: every worker converges on it (KV watch); returns the KV revision."""
        return await (await self.state_kv()).put(state_key(self.family, KEY_ACTIVE), check_version(version).encode())

    async def own_manifest(self, version: str) -> Manifest | None:
        """The version's manifest when it is one of this family's versions (None for another family's: the
        families share the object store, and one family's operations never touch another's versions)."""
        m = await self.manifest(version)
        return m if m is not None and (m.summary.get("family") or FRAUD) == self.family else None

    async def exists(self, version: str) -> bool:
        return is_local(self.model_dir, check_version(version)) or await self.own_manifest(version) is not None

    async def delete(self, version: str) -> list[str]:
        """Remove a version: from the object store (its manifest first, so it is unpublished at once, then its
        files) and from the local model dir. Returns where it was found: `object_store`, `model_dir` (empty: it
        existed nowhere). The caller checks first that the version is not served."""
        removed = []
        manifest = await self.own_manifest(version)
        if manifest is not None:
            obs = await self.objects()
            await obs.delete(f"{version}/{MANIFEST}")
            for f in manifest.files:
                with contextlib.suppress(NotFoundError):
                    await obs.delete(f"{version}/{f.name}")
            removed.append("object_store")
        local = self.model_dir / version
        if local.is_dir():
            await asyncio.to_thread(shutil.rmtree, local, True)
            removed.append("model_dir")
        return removed

    async def ensure_local(self, version: str) -> Path:
        """The version's local directory, fetched (or completed) from the object store when needed. A complete
        local copy is used as it is when the object store does not know the version (never published)."""
        check_version(version)
        try:
            manifest = await self.manifest(version)
        except Exception as exc:
            if is_local(self.model_dir, version):
                return self.model_dir / version  # object store unreachable: the local copy will do
            raise RegistryError(f"cannot read the object store for {version!r}: {exc!r}") from None
        if self.local_complete(version, manifest):
            return self.model_dir / version
        return await self.fetch(version, manifest)
