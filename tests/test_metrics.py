"""Every service's Prometheus metrics, scraped before and after one scored batch: the key series move, and every
fraudmesh_* family follows the Prometheus naming conventions.

Runs on the session `stack` (1 gateway, 1 aggregator, 2 inference workers, 1 feature worker). Other tests share it,
so every check is on the difference between two scrapes, never on an absolute count.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from deploy.demo import sample_batch
from deploy.stack import ServiceProc
from tests.stacks import Stack

N_TX = 1000
N_PARTIALS = 5  # 1000 transactions in partials of 200 (the default)


@dataclass
class Scrape:
    """One /metrics page, parsed: family name -> (type, samples)."""

    url: str
    families: dict[str, tuple[str, list[Sample]]]

    def value(self, sample: str, **labels: str) -> float:
        """Sum of the samples named `sample` whose labels include `labels` (0 when there are none)."""
        return sum(
            s.value
            for _type, samples in self.families.values()
            for s in samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, family: str) -> bool:
        return family in self.families


def scrape(url: str) -> Scrape:
    r = httpx.get(url, timeout=5)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:200]}"
    families = {f.name: (f.type, list(f.samples)) for f in text_string_to_metric_families(r.text)}
    return Scrape(url, families)


def metrics_url(stack: Stack, proc: ServiceProc | None) -> str:
    return f"{stack.gateway_url}/metrics" if proc is None else f"http://127.0.0.1:{proc.metrics_port}/metrics"


def procs(stack: Stack, name: str) -> list[ServiceProc]:
    out = [p for p in stack.procs if p.name == name]
    assert out, f"no {name} process in the stack"
    return out


def total(scrapes: list[Scrape], sample: str, **labels: str) -> float:
    return sum(s.value(sample, **labels) for s in scrapes)


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def scored_batch(stack: Stack) -> dict[str, object]:
    """Scrape everything, score one batch of 1000 through the gateway, scrape again."""
    services = {name: procs(stack, name) for name in ("aggregator", "inference", "feature")}

    def scrape_all() -> dict[str, list[Scrape]]:
        out = {name: [scrape(metrics_url(stack, p)) for p in ps] for name, ps in services.items()}
        out["gateway"] = [scrape(metrics_url(stack, None))]
        return out

    before = scrape_all()
    r = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": sample_batch(N_TX, seed=11)}, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["complete"] is True and len(doc["partials"]) == N_PARTIALS

    # the inference counters move just after the result is published (ack, then `scored`): give them a moment
    after: dict[str, list[Scrape]] = {}

    def settled() -> bool:
        nonlocal after
        after = scrape_all()
        moved = total(after["inference"], "fraudmesh_inference_partials_total", outcome="scored") - total(
            before["inference"], "fraudmesh_inference_partials_total", outcome="scored"
        )
        return moved >= N_PARTIALS and total(after["aggregator"], "fraudmesh_partials_in_flight") == 0

    wait_until(settled)
    return {"before": before, "after": after, "response": doc}


def delta(batch: dict[str, object], service: str, sample: str, **labels: str) -> float:
    before: dict[str, list[Scrape]] = batch["before"]  # type: ignore[assignment]
    after: dict[str, list[Scrape]] = batch["after"]  # type: ignore[assignment]
    return total(after[service], sample, **labels) - total(before[service], sample, **labels)


# ----------------------------------------------------------------------------------------- series that move
def test_gateway_request_count_and_latency_by_route_and_status(scored_batch: dict[str, object]) -> None:
    assert delta(scored_batch, "gateway", "fraudmesh_http_requests_total", path="/predict", status_code="200") == 1
    assert delta(scored_batch, "gateway", "fraudmesh_http_request_duration_seconds_count", path="/predict") == 1
    assert delta(scored_batch, "gateway", "fraudmesh_http_request_duration_seconds_sum", path="/predict") > 0


def test_aggregator_handler_partials_and_batch_size(scored_batch: dict[str, object]) -> None:
    d = scored_batch
    assert delta(d, "aggregator", "fraudmesh_handler_messages_total", handler="score", outcome="ok") == 1
    assert delta(d, "aggregator", "fraudmesh_handler_duration_seconds_count", handler="score") == 1
    assert delta(d, "aggregator", "fraudmesh_partials_published_total") == N_PARTIALS
    assert delta(d, "aggregator", "fraudmesh_score_requests_total", outcome="complete") == 1
    assert delta(d, "aggregator", "fraudmesh_score_batch_size_count") == 1
    assert delta(d, "aggregator", "fraudmesh_score_batch_size_sum") == N_TX
    after: dict[str, list[Scrape]] = d["after"]  # type: ignore[assignment]
    assert total(after["aggregator"], "fraudmesh_partials_in_flight") == 0, "partials still counted in flight"
    # the failure-path series exist (their movement is covered by tests/test_failures.py)
    for family in (
        "fraudmesh_partial_redeliveries",
        "fraudmesh_dead_lettered",
        "fraudmesh_partial_results_duplicate",
        "fraudmesh_partial_results_late",
    ):
        assert all(s.has(family) for s in after["aggregator"]), family


def test_inference_partials_queue_vs_compute_and_score_distribution(scored_batch: dict[str, object]) -> None:
    d = scored_batch
    versions: list[str] = d["response"]["model_versions"]  # type: ignore[index]
    assert len(versions) == 1
    # summed over both workers: which worker took which partial is JetStream's business
    assert delta(d, "inference", "fraudmesh_inference_partials_total", outcome="scored") == N_PARTIALS
    assert delta(d, "inference", "fraudmesh_partial_queue_seconds_count") == N_PARTIALS
    assert delta(d, "inference", "fraudmesh_partial_compute_seconds_count", stage="total") == N_PARTIALS
    assert delta(d, "inference", "fraudmesh_partial_compute_seconds_sum", stage="total") > 0
    assert delta(d, "inference", "fraudmesh_model_score_count", model_version=versions[0]) == N_TX
    # the score histogram's buckets cover [0, 1]: every score lands at or below le=1.0
    assert delta(d, "inference", "fraudmesh_model_score_bucket", model_version=versions[0], le="1.0") == N_TX


def test_every_service_exposes_nats_reconnects(stack: Stack) -> None:
    pages = {f"{p.name}-{p.index}": scrape(metrics_url(stack, p)) for p in stack.procs if p.metrics_port}
    pages["gateway"] = scrape(metrics_url(stack, None))
    missing = [name for name, page in pages.items() if not page.has("fraudmesh_nats_reconnects")]
    assert not missing, f"no fraudmesh_nats_reconnects_total on {missing}"
    for name, page in pages.items():
        assert page.families["fraudmesh_nats_reconnects"][0] == "counter", name


def test_health_and_readiness_on_every_metrics_port(stack: Stack) -> None:
    for p in stack.procs:
        if not p.metrics_port:
            continue
        for path in ("/healthz", "/readyz"):
            r = httpx.get(f"http://127.0.0.1:{p.metrics_port}{path}", timeout=5)
            assert r.status_code == 200, f"{p.name}-{p.index} {path}: {r.status_code} {r.text}"


# ---------------------------------------------------------------------------------------------- naming
TIME_WORDS = re.compile(r"(^|_)(seconds|duration|latency|time|age|delay|wait)(_|$)")
FORBIDDEN_UNITS = re.compile(r"_(ms|millis|milliseconds|us|micros|microseconds|ns|minutes|hours|days|kb|mb|gb)(_|$)")


def naming_problems(name: str, kind: str, samples: list[Sample]) -> list[str]:
    problems = []
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or "__" in name:
        problems.append("not lower snake_case")
    if FORBIDDEN_UNITS.search(name):
        problems.append("unit is not a base unit (seconds, bytes)")
    if kind == "counter":
        if any(not s.name.endswith(("_total", "_created")) for s in samples):
            problems.append("counter samples must end in _total")
    elif name.endswith("_total"):
        problems.append(f"a {kind} must not end in _total")
    if kind in ("histogram", "summary") and name.endswith(("_count", "_sum", "_bucket")):
        problems.append("histogram named like one of its series")
    base = name.removesuffix("_total")
    if TIME_WORDS.search(base) and kind != "info" and not base.endswith("_seconds"):
        problems.append("a time must be in seconds and end in _seconds")
    return problems


def test_every_fraudmesh_family_follows_prometheus_naming(stack: Stack) -> None:
    pages = [scrape(metrics_url(stack, p)) for p in stack.procs if p.metrics_port]
    pages.append(scrape(metrics_url(stack, None)))
    seen: dict[str, str] = {}
    problems: list[str] = []
    for page in pages:
        for name, (kind, samples) in page.families.items():
            if not name.startswith("fraudmesh_") or name.endswith("_created"):
                continue  # prometheus_client's `_created` timestamps come as gauge families of their own
            if seen.setdefault(name, kind) != kind:
                problems.append(f"{name}: a {kind} here, a {seen[name]} elsewhere")
            problems += [f"{name} ({kind}): {p}" for p in naming_problems(name, kind, samples)]
    assert len(seen) >= 15, sorted(seen)
    assert not problems, "\n".join(sorted(set(problems)))


def test_every_fraudmesh_family_is_documented(stack: Stack) -> None:
    """docs/observability.md names every family a service exports (a counter as `<name>_total`)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"`(fraudmesh_[a-z0-9_]+)`", doc))
    pages = [scrape(metrics_url(stack, p)) for p in stack.procs if p.metrics_port]
    pages.append(scrape(metrics_url(stack, None)))
    missing = {
        f"{name}_total" if kind == "counter" else name
        for page in pages
        for name, (kind, _samples) in page.families.items()
        if name.startswith("fraudmesh_")
        and not name.endswith("_created")
        and not {name, f"{name}_total"} & documented
        and not (kind == "counter" and name in documented)
    }
    assert not missing, f"exported but not in docs/observability.md: {sorted(missing)}"


def test_naming_rules_catch_bad_names() -> None:
    assert naming_problems("fraudmesh_partialLatencyMs", "gauge", []) != []
    assert naming_problems("fraudmesh_queue_ms", "histogram", []) != []
    assert naming_problems("fraudmesh_in_flight_total", "gauge", []) != []
    assert naming_problems("fraudmesh_feature_age", "histogram", []) != []
    assert naming_problems("fraudmesh_feature_age_seconds", "histogram", []) == []
    assert naming_problems("fraudmesh_partials_in_flight", "gauge", []) == []
    assert naming_problems("fraudmesh_handler_messages", "counter", []) == []
