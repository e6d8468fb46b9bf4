"""The shipped Prometheus alert rules pass `promtool check rules` and name only metrics the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = sorted((Path(__file__).resolve().parent.parent / "deploy" / "prometheus").glob("*.rules.yml"))


@pytest.mark.parametrize("path", RULES, ids=[p.name for p in RULES])
def test_promtool_accepts_the_rules(path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_name_exported_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from aggregator.ingest_publisher import IngestPublisher
    from feature_svc.ingest.ingestor import IngestMetrics

    registry = CollectorRegistry()
    IngestMetrics(registry)
    IngestPublisher(None, registry)  # type: ignore[arg-type]
    exported = {s.name for m in registry.collect() for s in m.samples} | {m.name for m in registry.collect()}
    assert RULES
    # the scoring path's rules (serving.rules.yml) are checked against a real Prometheus scrape in tests/test_compose.py
    for path in [p for p in RULES if p.name == "live-features.rules.yml"]:
        used = set(re.findall(r"\b(fraudmesh_[a-z_]+)", path.read_text()))
        assert used and used <= exported, f"{path.name} names metrics nobody exports: {sorted(used - exported)}"
