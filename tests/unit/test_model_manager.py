"""The ModelManager (inference_svc/model_manager.py) without NATS: start, hot swap, A/B routing, KV convergence,
failures that leave the routing as it was. Models are small bootstrap models trained into a temporary dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from inference_svc.artifact import EmbeddingSpec, read_metadata
from inference_svc.embeddings import EmbeddingBlock
from inference_svc.metrics import ModelMetrics
from inference_svc.model_manager import ModelManager, NoModel
from inference_svc.registry import RegistryState
from inference_svc.scorer import Scorer
from shared.model_messages import ActivateModel, ClearCandidate, ReloadModels, SetCandidate
from tests.test_model_registry import add_version


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 (active) and v2, trained once for the module."""
    d = tmp_path_factory.mktemp("models")
    add_version(d, "v1", seed=1)
    add_version(d, "v2", seed=2)
    (d / "active").write_text("v1")
    return d


@pytest.fixture
def model_dir(trained: Path, tmp_path: Path) -> Path:
    d = tmp_path / "models"
    shutil.copytree(trained, d)
    return d


class FakeSource:
    """A registry with a KV state and nothing to fetch (every version is local)."""

    def __init__(self, model_dir: Path, entries: dict[str, tuple[str, int]] | None = None) -> None:
        self.model_dir = model_dir
        self.entries = entries or {}
        self.fetched: list[str] = []

    async def ensure_local(self, version: str) -> Path:
        self.fetched.append(version)
        return self.model_dir / version

    async def read_entries(self) -> dict[str, tuple[str, int]]:
        return dict(self.entries)


def manager(model_dir: Path, **kwargs: object) -> tuple[ModelManager, ModelMetrics]:
    metrics = ModelMetrics(CollectorRegistry())
    m = ModelManager(
        model_dir=model_dir,
        build=lambda model: Scorer(model, None),
        metrics=metrics,
        instance_id="w-1",
        **kwargs,  # type: ignore[arg-type]
    )
    return m, metrics


def version_of(m: ModelManager) -> str:
    assert m.routing is not None
    return m.routing.active.model.version


async def test_start_serves_the_local_active_version(model_dir: Path) -> None:
    m, metrics = manager(model_dir)
    await m.start()
    assert version_of(m) == "v1"
    assert m.routing is not None and m.routing.candidate is None
    assert metrics.active_info.labels("v1")._value.get() == 1
    assert m.state().active == "v1" and m.state().swaps == 0


async def test_start_prefers_the_registry_then_falls_back_to_local(model_dir: Path) -> None:
    m, _ = manager(model_dir, source=FakeSource(model_dir, {"active": ("v2", 3)}))
    await m.start()
    assert version_of(m) == "v2"
    broken, _ = manager(model_dir, source=FakeSource(model_dir, {"active": ("v9", 4)}))
    await broken.start()  # v9 does not load: the local active one serves, and the error is kept
    assert version_of(broken) == "v1"
    assert "v9 (from registry)" in broken.last_error


async def test_no_model_at_all_says_how_to_fix_it(tmp_path: Path) -> None:
    m, _ = manager(tmp_path / "empty")
    with pytest.raises(NoModel, match="fraudmesh model activate"):
        await m.start()


async def test_activate_swaps_and_a_partial_keeps_the_scorer_it_picked(model_dir: Path) -> None:
    m, metrics = manager(model_dir)
    await m.start()
    assert m.routing is not None
    picked = m.routing.pick("req", 0)  # a partial in flight
    state = await m.control(ActivateModel(version="v2"))
    assert (state.active, state.error, state.swaps) == ("v2", "", 1)
    assert picked.model.version == "v1", "the partial in flight was moved to another version"
    assert version_of(m) == "v2"
    assert metrics.swaps._value.get() == 1


async def test_an_unknown_version_changes_nothing_and_says_why(model_dir: Path) -> None:
    m, metrics = manager(model_dir)
    await m.start()
    before = m.routing
    state = await m.control(ActivateModel(version="nope"))
    assert state.active == "v1" and "cannot activate nope" in state.error
    assert m.routing is before and m.target.active == ""
    assert metrics.swap_failures._value.get() == 1


async def test_a_pinned_worker_ignores_activation(model_dir: Path) -> None:
    m, _ = manager(model_dir, pinned="v1")
    await m.start()
    state = await m.control(ActivateModel(version="v2"))
    assert (state.active, state.pinned) == ("v1", True)


async def test_ab_split_is_deterministic_and_near_the_share(model_dir: Path) -> None:
    m, metrics = manager(model_dir)
    await m.start()
    state = await m.control(SetCandidate(version="v2", share=0.3))
    assert (state.candidate, state.candidate_share) == ("v2", 0.3)
    r = m.routing
    assert r is not None
    arms = [r.arm(r.pick("ab", i)) for i in range(2000)]
    assert 0.25 < arms.count("candidate") / len(arms) < 0.35
    assert [r.pick("ab", i) for i in range(50)] == [r.pick("ab", i) for i in range(50)]
    assert metrics.candidate_share.labels("v2")._value.get() == 0.3
    cleared = await m.control(ClearCandidate())
    assert cleared.candidate == "" and m.routing is not None and m.routing.candidate is None


async def test_kv_entries_apply_only_when_newer(model_dir: Path) -> None:
    m, _ = manager(model_dir)
    await m.start()
    assert m.note_kv("active", "v2", 5)
    assert m.changed.is_set()
    assert not m.note_kv("active", "v1", 4), "an older revision won"
    assert not m.note_kv("something_else", "x", 9)
    assert m.target == RegistryState(active="v2", revisions=(5, 0, 0))
    await m.converge()
    assert version_of(m) == "v2"


async def test_a_model_whose_embeddings_are_missing_does_not_load(model_dir: Path) -> None:
    meta = read_metadata(model_dir / "v2" / "metadata.json")
    spec = EmbeddingSpec(file="embeddings.parquet", dim=2, types=["card"])
    shutil.copytree(model_dir / "v2", model_dir / "v3")
    (model_dir / "v3" / "metadata.json").write_bytes(
        msgspec.json.encode(msgspec.structs.replace(meta, version="v3", embeddings=spec))
    )
    m, _ = manager(model_dir)
    await m.start()
    state = await m.control(ActivateModel(version="v3"))
    assert state.active == "v1" and "v3/embeddings.parquet is missing" in state.error


def test_embeddings_are_served_from_memory_with_defaults_for_unknown_entities(tmp_path: Path) -> None:
    spec = EmbeddingSpec(file="emb.parquet", dim=2, types=["card", "ip"], default={"card": [9.0, 9.0]})
    table = pa.table(
        {
            "entity_type": ["card", "ip", "card"],
            "entity_id": ["c1", "1.2.3.4", ""],
            "embedding": pa.array([[0.5, 1.5], [2.0, 3.0], [9.0, 9.0]], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "emb.parquet")
    block = EmbeddingBlock.load(spec, "g1", tmp_path)
    assert len(block) == 2
    vectors = block.vectors([("card", "c1"), ("ip", "1.2.3.4"), ("card", "new"), ("ip", "9.9.9.9")])
    assert [v.tolist() for v in vectors] == [[0.5, 1.5], [2.0, 3.0], [9.0, 9.0], [0.0, 0.0]]


async def test_reload_swaps_to_fresh_scorers_of_the_same_versions_and_only_on_the_named_worker(
    model_dir: Path,
) -> None:
    m, _ = manager(model_dir)
    await m.start()
    await m.control(SetCandidate(version="v2", share=0.5))
    assert m.routing is not None and m.routing.candidate is not None
    before = m.routing
    other = await m.control(ReloadModels(instance_id="w-2"))  # another worker's turn: nothing happens here
    assert m.routing is before and other.reloads == 0
    state = await m.control(ReloadModels(instance_id="w-1"))
    assert not state.error and state.reloads == 1 and state.reload_ms > 0
    after = m.routing
    assert after is not None and after.candidate is not None
    assert after.active is not before.active and after.candidate is not before.candidate
    assert (after.active.model.version, after.candidate.model.version, after.share) == ("v1", "v2", 0.5)
    assert state.swaps == 0  # a reload is not a version change
    shutil.rmtree(model_dir / "v1")  # a version that cannot be loaded again: the worker keeps what it has
    failed = await m.control(ReloadModels(instance_id="w-1"))
    assert "reload failed" in failed.error and m.routing is after and failed.reloads == 1
