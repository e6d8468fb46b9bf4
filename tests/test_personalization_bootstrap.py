"""The personalization bootstrap model (trainer/personalization/bootstrap.py): trained without torch (a subprocess in
which `import torch` fails), served by the inference worker's loader with the LightGCN export's inputs and outputs,
and better than the popularity ranking on its own test split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_svc.world.personalization.features import CONTEXT_FEATURES
from feature_svc.world.personalization.world import WorldOptions
from inference_svc.personalization.artifact import OUTPUTS, active_version, load

ROOT = Path(__file__).resolve().parent.parent
NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, NoTorch())
from pathlib import Path
from trainer.personalization.bootstrap import train_bootstrap
train_bootstrap(Path(sys.argv[1]))
assert "torch" not in sys.modules
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("pers-bootstrap")
    res = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    version = active_version(out)
    assert version is not None
    return out, json.loads((out / version / "metadata.json").read_text())


def test_trained_without_torch_and_activated(trained: tuple[Path, dict[str, Any]]) -> None:
    out, meta = trained
    assert meta["kind"] == "pers-bootstrap" and meta["family"] == "personalization"
    assert meta["version"] == active_version(out) and meta["version"].startswith("pers-bootstrap-")
    assert meta["context_features"] == list(CONTEXT_FEATURES)
    world = meta["training"]["world"]
    assert WorldOptions(**{k: world[k] for k in ("seed", "users", "items", "days")}).users == world["users"]


def test_it_beats_popularity_on_its_test_split(trained: tuple[Path, dict[str, Any]]) -> None:
    m = trained[1]["metrics"]
    assert m["pers-bootstrap.ndcg@10"] > m["popularity.ndcg@10"]
    assert m["pers-bootstrap.recall@10"] > m["popularity.recall@10"]
    assert m["pers-bootstrap.conversion_auc"] > 0.5


def test_the_worker_loads_it_and_its_relevance_follows_the_affinity(trained: tuple[Path, dict[str, Any]]) -> None:
    out, meta = trained
    model = load(out, meta["version"])
    n_items = model.cold_item
    user = 0
    users = np.full(n_items + 1, user, dtype=np.int64)
    items = np.arange(n_items + 1, dtype=np.int64)  # every item, then the cold row
    context = np.zeros((n_items + 1, len(CONTEXT_FEATURES)), np.float32)
    relevance, affinity, conversion = model.run(users, items, context)
    for a in (relevance, affinity, conversion):
        assert a.shape == (n_items + 1,) and np.isfinite(a).all()
    assert ((relevance >= 0) & (relevance <= 1)).all() and ((conversion > 0) & (conversion < 1)).all()
    # relevance is the share of the catalogue the user's affinity ranks below the item: consistent with affinity
    order = np.argsort(affinity[:n_items])
    # (affinity and the catalogue's scores are two float32 sums: a near-tie may differ by one item's share)
    assert np.all(np.diff(relevance[:n_items][order]) >= -1.0 / n_items - 1e-6)
    assert relevance[:n_items].max() >= 1.0 - 1.0 / n_items - 1e-6
    assert relevance[:n_items].min() <= 1.0 / n_items + 1e-6
    # a cold user still gets a score for every item (the mean embedding)
    cold = model.run(np.full(3, model.cold_user, np.int64), np.arange(3, dtype=np.int64), context[:3])
    assert np.isfinite(np.stack(cold)).all()
    assert set(OUTPUTS) == {o.name for o in model.session.get_outputs()}
