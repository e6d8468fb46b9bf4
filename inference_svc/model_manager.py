"""The models of one inference worker: loading, hot swap, A/B routing and convergence on the registry's state.
No NATS here: the registry is anything that can fetch a version and read the state (`ModelSource`), and the
manager is tested on its own (tests/unit/test_model_manager.py).

At start it serves the pinned version (FRAUDMESH_MODEL_VERSION) when set, else the registry's `active` one, else
the local `<model_dir>/active` one. Afterwards `control` (a `fraud.model.control` request) and `note_kv` (a KV
entry) change the target, and `converge` brings the routing in line. A swap prepares the new Scorer completely
(fetch, load, embeddings) before it replaces one reference (`self.routing`); each partial picks its Scorer once,
so all its transactions are scored by one version and partials in flight finish on the version they started with.
A/B: `routing.pick` sends a partial to the candidate when the hash of its request id and index falls below the
share, so a redelivered partial gets the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from inference_svc.artifact import ArtifactError, active_version
from inference_svc.metrics import ModelMetrics
from inference_svc.model import OnnxModel, load_model
from inference_svc.registry import (
    STATE_KEYS,
    RegistryError,
    RegistryState,
    goes_to_candidate,
    is_local,
    local_active,
)
from inference_svc.scorer import Scorer
from shared.logs import log_fields
from shared.model_messages import (
    ActivateModel,
    ClearCandidate,
    ModelControl,
    ModelWorkerState,
    ReloadModels,
    SetCandidate,
)

KV_POLL_S = 15.0
"""Besides the KV watch, the state is re-read this often (a lost watch must not strand a worker)."""


class ModelLoadError(RuntimeError):
    """A model version could not be made ready; the worker keeps serving what it served."""


class NoModel(RuntimeError):
    """No model could be loaded at start. The message says what is missing and how to fix it."""


class ModelSource(Protocol):
    """What the manager needs of the registry (inference_svc/registry.py `Registry`)."""

    async def ensure_local(self, version: str) -> Path: ...

    async def read_entries(self) -> dict[str, tuple[str, int]]: ...


@dataclass(frozen=True)
class Routing:
    """Which Scorer serves a partial. Immutable: a swap builds a new Routing and replaces the reference."""

    active: Scorer
    candidate: Scorer | None = None
    share: float = 0.0

    def pick(self, request_id: str, index: int) -> Scorer:
        if self.candidate is not None and goes_to_candidate(request_id, index, self.share):
            return self.candidate
        return self.active

    def arm(self, scorer: Scorer) -> str:
        return "candidate" if scorer is self.candidate and scorer is not self.active else "active"


BuildScorer = Callable[[OnnxModel], Scorer]
"""Builds the Scorer of a loaded model (the worker wires in the feature source); raises ModelLoadError."""


class ModelManager:
    def __init__(
        self,
        *,
        model_dir: Path,
        build: BuildScorer,
        metrics: ModelMetrics,
        source: ModelSource | None = None,
        pinned: str = "",
        onnx_threads: int = 1,
        instance_id: str = "",
    ) -> None:
        self.model_dir = Path(model_dir)
        self.build = build
        self.m = metrics
        self.source = source
        self.pinned = pinned
        self.onnx_threads = onnx_threads
        self.instance_id = instance_id
        self.routing: Routing | None = None
        self.target = RegistryState()
        """What the registry asks for: the KV's entries (with their revisions), updated by control messages."""
        self.swaps = 0
        self.reloads = 0
        self.reload_ms = 0.0
        self.last_error = ""
        self.changed = asyncio.Event()
        """Set by `note_kv` when the target moved; `follow` applies it."""
        self._swap_lock = asyncio.Lock()
        self.log = logging.getLogger("fraudmesh.inference.models")

    # ------------------------------------------------------------------------------------ loading
    async def prepare(self, version: str) -> Scorer:
        """Make `version` ready to serve: fetch it when it is not local, load it (ONNX session and, for a GNN, its
        embeddings, into memory), build its Scorer. Nothing changes for the partials being scored meanwhile."""
        t0 = time.perf_counter()
        if self.source is not None:
            try:
                await self.source.ensure_local(version)
            except RegistryError as exc:
                raise ModelLoadError(str(exc)) from None
        elif not is_local(self.model_dir, version):
            raise ModelLoadError(f"model version {version!r} is not in {self.model_dir}")
        try:
            # onnxruntime builds its session off the event loop: heartbeats and scoring go on meanwhile
            model = await asyncio.to_thread(load_model, self.model_dir, version, self.onnx_threads)
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from None
        if model.version != version:
            raise ModelLoadError(
                f"{self.model_dir / version / 'metadata.json'} says version {model.version!r}, not {version!r}: "
                f"a version's directory must carry its own name"
            )
        scorer = self.build(model)
        self.log.info(
            "model ready",
            extra=log_fields(
                version=version, entity_features=scorer.entities is not None, seconds=round(time.perf_counter() - t0, 3)
            ),
        )
        return scorer

    async def start(self) -> Routing:
        """The first routing: the pinned version, else the registry's active one, else the local `active` file.
        Raises NoModel when none loads."""
        if self.source is not None:
            try:
                await self.refresh_target()
            except Exception as exc:
                self.log.warning(
                    "model registry unreadable at start; using the local model", extra=log_fields(error=repr(exc))
                )
        choices: list[tuple[str, str]] = []
        if self.pinned:
            choices.append((self.pinned, "FRAUDMESH_MODEL_VERSION"))
        else:
            if self.target.active:
                choices.append((self.target.active, "registry"))
            local = local_active(self.model_dir)
            if local and local != self.target.active:
                choices.append((local, f"{self.model_dir / 'active'}"))
        if not choices:
            try:
                active_version(self.model_dir)
            except ArtifactError as exc:
                raise NoModel(f"{exc} Or activate a published version: `fraudmesh model activate`.") from None
        errors: list[str] = []
        for version, origin in choices:
            try:
                active = await self.prepare(version)
                break
            except ModelLoadError as exc:
                errors.append(f"{version} (from {origin}): {exc}")
                self.log.error("model could not be loaded", extra=log_fields(version=version, error=str(exc)))
        else:
            raise NoModel("no model could be loaded: " + "; ".join(errors))
        candidate, share = None, 0.0
        want = self.target.candidate if self.target.candidate_share > 0 else ""
        if want and want != active.model.version:
            try:
                candidate, share = await self.prepare(want), self.target.candidate_share
            except ModelLoadError as exc:
                errors.append(f"candidate {want}: {exc}")
                self.m.swap_failures.inc()
        self.last_error = "; ".join(errors)
        routing = Routing(active, candidate, share)
        self._set_routing(routing, swapped=False)
        self.changed.clear()  # the target read above is what this routing serves
        return routing

    # ------------------------------------------------------------------------------------ routing
    def _set_routing(self, routing: Routing, *, swapped: bool) -> None:
        self.routing = routing  # the switch: a partial that already picked its Scorer keeps it
        if swapped:
            self.swaps += 1
            self.m.swaps.inc()
        self.m.active_info.clear()
        self.m.active_info.labels(routing.active.model.version).set(1)
        self.m.candidate_share.clear()
        if routing.candidate is not None:
            self.m.candidate_share.labels(routing.candidate.model.version).set(routing.share)
        self.log.info(
            "model routing",
            extra=log_fields(
                active=routing.active.model.version,
                candidate=routing.candidate.model.version if routing.candidate is not None else "",
                share=routing.share,
                swaps=self.swaps,
            ),
        )

    def _loaded(self, version: str) -> Scorer | None:
        r = self.routing
        if r is None:
            return None
        if r.active.model.version == version:
            return r.active
        if r.candidate is not None and r.candidate.model.version == version:
            return r.candidate
        return None

    async def converge(self) -> tuple[str, str]:
        """Bring the routing in line with `self.target`; returns (active error, candidate error), '' when fine.
        Whatever fails to load leaves that part of the routing as it was."""
        async with self._swap_lock:
            routing = self.routing
            assert routing is not None, "converge before start"
            target = self.target
            active_error = candidate_error = ""
            active = routing.active
            want = target.active if target.active and not self.pinned else active.model.version
            if want != active.model.version:
                try:
                    active = self._loaded(want) or await self.prepare(want)
                except ModelLoadError as exc:
                    active_error = f"cannot activate {want}: {exc}"
                    self.m.swap_failures.inc()
            candidate, share = None, 0.0
            want = target.candidate if target.candidate_share > 0 else ""
            if want and want != active.model.version:
                try:
                    candidate, share = self._loaded(want) or await self.prepare(want), target.candidate_share
                except ModelLoadError as exc:
                    candidate_error = f"cannot use candidate {want}: {exc}"
                    self.m.swap_failures.inc()
                    if routing.candidate is not None and routing.candidate is not active:
                        candidate, share = routing.candidate, routing.share
            new = Routing(active, candidate, share)
            if new != routing:
                self._set_routing(new, swapped=new.active is not routing.active)
            self.last_error = "; ".join(e for e in (active_error, candidate_error) if e)
            if self.last_error:
                self.log.error("model change failed", extra=log_fields(error=self.last_error))
            return active_error, candidate_error

    async def reload(self) -> str:
        """Load the served versions again (fresh ONNX sessions and Scorers, from the model dir or the registry) and
        swap to them in one step; partials keep being scored by the old Scorers meanwhile. Returns '' or the error
        (then nothing changed)."""
        async with self._swap_lock:
            routing = self.routing
            assert routing is not None, "reload before start"
            t0 = time.perf_counter()
            try:
                active = await self.prepare(routing.active.model.version)
                candidate = (
                    await self.prepare(routing.candidate.model.version) if routing.candidate is not None else None
                )
            except ModelLoadError as exc:
                self.m.swap_failures.inc()
                return f"reload failed, still serving the models loaded before: {exc}"
            self._set_routing(Routing(active, candidate, routing.share), swapped=False)
            self.reloads += 1
            self.reload_ms = round((time.perf_counter() - t0) * 1000.0, 3)
            return ""

    # ------------------------------------------------------------------------------- the target
    async def control(self, req: ModelControl) -> ModelWorkerState:
        """Apply a control request, answer with this worker's state. A request that cannot be applied (e.g. an
        unknown version) changes nothing and is answered with the reason."""
        before = self.target
        if isinstance(req, ReloadModels):
            return self.state(await self.reload() if req.instance_id == self.instance_id else "")
        if isinstance(req, ActivateModel):
            self.target = replace(before, active=req.version)
        elif isinstance(req, SetCandidate):
            self.target = replace(before, candidate=req.version, candidate_share=req.share)
        elif isinstance(req, ClearCandidate):
            self.target = replace(before, candidate="", candidate_share=0.0)
        active_error, candidate_error = await self.converge()
        if isinstance(req, ActivateModel):  # (a pinned worker answers with `pinned` and its pinned version)
            if active_error:
                self.target = replace(self.target, active=before.active)
            return self.state(active_error)
        if isinstance(req, SetCandidate) and candidate_error:
            self.target = replace(self.target, candidate=before.candidate, candidate_share=before.candidate_share)
            return self.state(candidate_error)
        return self.state(self.last_error if not isinstance(req, ClearCandidate) else "")

    def note_kv(self, key: str, value: str, revision: int) -> bool:
        """Merge one KV entry into the target when it is newer than what we know of that key."""
        if key not in STATE_KEYS or revision <= self.target.revision(key):
            return False
        self.target = self.target.with_key(key, value, revision)
        self.changed.set()
        return True

    async def refresh_target(self) -> bool:
        """Re-read the registry's state; True when it moved."""
        assert self.source is not None
        changed = False
        for key, (value, revision) in (await self.source.read_entries()).items():
            changed |= self.note_kv(key, value, revision)
        return changed

    async def follow(self, poll_s: float = KV_POLL_S) -> None:
        """Apply target changes (debounced, so `candidate` and `candidate_share` written together apply
        together), and re-read the state every `poll_s` in case the watch lost something. Runs until cancelled."""
        while True:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=poll_s)
                changed = self.changed.is_set()
                if changed:
                    await asyncio.sleep(0.02)
                elif self.source is not None:
                    changed = await self.refresh_target()
                self.changed.clear()
                if changed or self.last_error:
                    await self.converge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("model state check failed", extra=log_fields(error=repr(exc)))
                await asyncio.sleep(2.0)

    # ----------------------------------------------------------------------------------- reports
    def state(self, error: str = "") -> ModelWorkerState:
        r = self.routing
        return ModelWorkerState(
            instance_id=self.instance_id,
            active=r.active.model.version if r is not None else "",
            candidate=r.candidate.model.version if r is not None and r.candidate is not None else "",
            candidate_share=r.share if r is not None and r.candidate is not None else 0.0,
            pinned=bool(self.pinned),
            swaps=self.swaps,
            error=error,
            reloads=self.reloads,
            reload_ms=self.reload_ms,
        )

    def health_details(self) -> dict[str, str]:
        r = self.routing
        details = {"model_version": r.active.model.version if r is not None else ""}
        if r is not None and r.candidate is not None:
            details["model_candidate"] = r.candidate.model.version
            details["model_candidate_share"] = str(r.share)
        if self.last_error:
            details["model_last_error"] = self.last_error[:200]
        return details
