"""Runtime settings: the part of `Settings` an operator may change while fraudmesh runs (`POST /config`).

The overrides live in one key (`subjects.CONFIG_KEY`) of the NATS KV bucket `subjects.CONFIG_BUCKET`, as the JSON of
a `RuntimeConfig` (only the fields set). Every gateway, aggregator, inference and feature instance watches that key
and holds a `LiveSettings`: its own settings (from the environment) with the overrides on top. A restart is never
needed, and an instance that starts later reads the current overrides first.

What may change is what each instance reads per request (or can re-apply at once): deadlines and limits, partial
size and coalescing, admission control, the degraded policy, the freshness bound, idempotency. Connections, ports,
keys and the model directory are not runtime settings. `null` for a field removes its override (each instance
goes back to its own setting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_type_hints

import msgspec
from msgspec import Meta, Struct
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from shared import subjects
from shared.messages import FieldError
from shared.settings import Settings

Positive = Annotated[int, Meta(ge=1)]


class RuntimeConfig(Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Overrides of the runtime settings; a field left out (or null) keeps each instance's own value.
    The meaning of each field is that of the setting of the same name (docs/settings.md)."""

    partial_size: Positive | None = None
    coalesce_window_ms: Annotated[float, Meta(ge=0)] | None = None
    degraded_policy: Literal["flag", "review", "fail"] | None = None
    request_timeout_ms: Positive | None = None
    max_batch_size: Positive | None = None
    max_partials_per_request: Positive | None = None
    gateway_max_in_flight: Positive | None = None
    gateway_max_in_flight_transactions: Positive | None = None
    admission_max_queue_ms: Annotated[float, Meta(gt=0)] | None = None
    aggregator_max_in_flight_transactions: Positive | None = None
    feature_max_age_s: Annotated[float, Meta(gt=0)] | None = None
    idempotency_enabled: bool | None = None
    idempotency_window_s: Annotated[float, Meta(gt=0)] | None = None


RUNTIME_FIELDS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(RuntimeConfig))

APPLIES_TO: dict[str, tuple[str, ...]] = {
    "partial_size": ("aggregator",),
    "coalesce_window_ms": ("aggregator",),
    "degraded_policy": ("aggregator", "gateway"),
    "request_timeout_ms": ("gateway", "aggregator", "inference"),
    "max_batch_size": ("gateway", "aggregator"),
    "max_partials_per_request": ("gateway",),
    "gateway_max_in_flight": ("gateway",),
    "gateway_max_in_flight_transactions": ("gateway",),
    "admission_max_queue_ms": ("gateway",),
    "aggregator_max_in_flight_transactions": ("aggregator",),
    "feature_max_age_s": ("inference", "gateway"),
    "idempotency_enabled": ("gateway",),
    "idempotency_window_s": ("gateway",),
}
"""Which services read each runtime setting (every instance of them applies a change)."""


def setting_description(name: str) -> str:
    """The description of a setting (its `Meta` in shared/settings.py), for the OpenAPI document."""
    hint = get_type_hints(Settings, include_extras=True)[name]
    found = [m.description for m in getattr(hint, "__metadata__", ()) if isinstance(m, Meta) and m.description]
    return found[-1] if found else name


_decode = msgspec.json.Decoder(RuntimeConfig)
_encode = msgspec.json.Encoder()


class ConfigError(ValueError):
    """A config change is invalid; `errors` name each bad field (`$.<field>`) and say what it must be."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def encode(config: RuntimeConfig) -> bytes:
    return _encode.encode(config)


def decode(data: bytes) -> RuntimeConfig:
    """The stored overrides; an unreadable value (written by hand) counts as none."""
    if not data:
        return RuntimeConfig()
    try:
        return _decode.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return RuntimeConfig()


def effective(base: Settings, overrides: RuntimeConfig) -> Settings:
    """`base` with the overrides on top, checked as a whole (e.g. request_timeout_ms <= max_request_timeout_ms)."""
    changes = {name: value for name in RUNTIME_FIELDS if (value := getattr(overrides, name)) is not None}
    return msgspec.structs.replace(base, **changes) if changes else base


def merge(current: RuntimeConfig, patch: object, base: Settings) -> RuntimeConfig:
    """`current` with `patch` (a JSON object: field -> value, null removes the override) applied and validated.
    Raises ConfigError naming every bad field."""
    if not isinstance(patch, dict) or not patch:
        raise ConfigError(
            [
                FieldError(
                    path="$",
                    message='Send a JSON object of the settings to change, e.g. {"partial_size": 100}; '
                    f"runtime settings: {', '.join(RUNTIME_FIELDS)}.",
                )
            ]
        )
    errors = [
        FieldError(
            path=f"$.{str(name)[:64]}",
            message=f"Not a runtime setting. Runtime settings: {', '.join(RUNTIME_FIELDS)} (the others need a "
            "restart with the FRAUDMESH_* variable).",
        )
        for name in patch
        if name not in RUNTIME_FIELDS
    ]
    doc: dict[str, Any] = msgspec.to_builtins(current)
    for name, value in patch.items():
        if name in RUNTIME_FIELDS:
            errors.extend(_check_field(name, value))
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
    if errors:
        raise ConfigError(errors)
    merged = msgspec.convert(doc, RuntimeConfig)
    limit = base.max_request_timeout_ms
    if merged.request_timeout_ms is not None and merged.request_timeout_ms > limit:
        raise ConfigError(
            [
                FieldError(
                    path="$.request_timeout_ms",
                    message=f"Must be at most max_request_timeout_ms ({limit} ms, not a runtime setting), got "
                    f"{merged.request_timeout_ms}.",
                )
            ]
        )
    return merged


def _check_field(name: str, value: object) -> list[FieldError]:
    if value is None:
        return []
    try:
        msgspec.convert({name: value}, RuntimeConfig)
    except msgspec.ValidationError as exc:
        reason = str(exc).split(" - at ")[0]
        return [FieldError(path=f"$.{name}", message=f"{reason}; got {str(value)[:64]!r}.")]
    return []


class LiveSettings:
    """One instance's settings: its own (`base`) with the current overrides on top. Readers take `current` at the
    moment they need a value; `listen(fn)` runs `fn(new)` after each change (a listener re-applies values that
    were copied at start, e.g. an admission limit)."""

    def __init__(self, base: Settings) -> None:
        self.base = base
        self.current = base
        self.overrides = RuntimeConfig()
        self.revision = 0
        self._listeners: list[Callable[[Settings], None]] = []
        self._changed = asyncio.Event()

    def listen(self, fn: Callable[[Settings], None]) -> None:
        self._listeners.append(fn)

    def apply(self, overrides: RuntimeConfig, revision: int) -> None:
        self.current = effective(self.base, overrides)
        self.overrides = overrides
        self.revision = revision
        for fn in self._listeners:
            fn(self.current)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until the overrides of `revision` (or a later one) are applied here; False after `timeout`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.revision < revision:
            left = end - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return False
        return True

    def apply_entry(self, entry: KeyValue.Entry) -> None:
        """A KV entry of the config bucket (deleted or purged: no overrides). Other keys are ignored."""
        if entry.key != subjects.CONFIG_KEY:
            return
        deleted = entry.operation in ("DEL", "PURGE")
        self.apply(RuntimeConfig() if deleted else decode(entry.value or b""), entry.revision or 0)


async def config_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The config bucket, created (empty) by whoever needs it first."""
    try:
        return await js.key_value(subjects.CONFIG_BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=subjects.CONFIG_BUCKET,
            description="fraudmesh runtime settings (POST /config)",
            history=16,
            storage=StorageType.FILE,
            replicas=replicas,
        )
        try:
            return await js.create_key_value(config)
        except BadRequestError:
            return await js.key_value(subjects.CONFIG_BUCKET)
