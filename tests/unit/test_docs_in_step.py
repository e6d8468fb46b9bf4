"""The reference documents name everything they document: every HTTP route of the OpenAPI document in
docs/http-api.md, every subject, stream, bucket and header of shared/subjects.py in docs/nats-api.md.
(Every exported metric family in docs/observability.md: tests/test_metrics.py, which scrapes the services.)"""

from __future__ import annotations

import re
from pathlib import Path

from gateway.app import create_app
from shared import subjects
from shared.settings import load_settings

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"


def _route_spellings(path: str) -> list[str]:
    """How docs/http-api.md may write `path`: as is, or the Open Inference Protocol's model routes as
    `/v2/models/{name}[/versions/{v}]...` (one row for every model name)."""
    if not path.startswith("/v2/models/{name}"):
        return [path]
    rest = path.removeprefix("/v2/models/{name}").removeprefix("/versions/{version}")
    return [f"/v2/models/{{name}}[/versions/{{v}}]{rest}", f"/v2/models/{{name}}[/versions/{{v}}]`{rest}"]


def test_every_openapi_route_is_in_the_http_api_document() -> None:
    doc = (DOCS / "http-api.md").read_text()
    schema = create_app(load_settings({})).openapi_schema
    assert schema.paths
    missing = [p for p in schema.paths if not any(s in doc for s in _route_spellings(p))]
    assert not missing, f"routes of /docs/openapi.json not in docs/http-api.md: {missing}"


def test_every_subject_stream_bucket_and_header_is_in_the_nats_api_document() -> None:
    doc = (DOCS / "nats-api.md").read_text()
    names = {
        name: value
        for name, value in vars(subjects).items()
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and isinstance(value, str) and value
    }
    assert subjects.SCORE in names.values()
    missing = sorted(f"{name} = {value!r}" for name, value in names.items() if value not in doc)
    assert not missing, f"shared/subjects.py names not in docs/nats-api.md: {missing}"
