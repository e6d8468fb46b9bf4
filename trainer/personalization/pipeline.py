"""Simulate, split, train the graph model and both baselines, evaluate them on the test split, export the model."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_svc.world.personalization.features import ITEM_FEATURES, item_features
from feature_svc.world.personalization.world import World, WorldOptions, generate
from trainer.personalization import export
from trainer.personalization.data import Split, split
from trainer.personalization.evaluate import K, auc, ranking
from trainer.personalization.model import GraphOptions, head_scores, train_embeddings, train_head


@dataclass(frozen=True)
class Outcome:
    version: str
    metrics: dict[str, dict[str, float]]  # model -> ndcg@10, recall@10, conversion_auc
    losses: dict[str, list[float]]
    world: dict[str, Any]
    split: dict[str, float]
    seconds: dict[str, float]
    path: Path | None


def _evaluate(world: World, s: Split, users: np.ndarray, items: np.ndarray, seed: int) -> tuple[dict[str, float], Any]:
    head = train_head(users, items, s.head.user, s.head.item, s.head.context, s.head.bought, seed)
    p = head_scores(head, users, items, s.test.user, s.test.item, s.test.context)
    return {**ranking(users @ items.T, s.test_items, s.seen), "conversion_auc": auc(s.test.bought, p)}, head


def run(world_opts: WorldOptions, graph: GraphOptions, out: Path | None, activate: bool = True) -> Outcome:
    torch.set_num_threads(1)  # 2 shared cores: more threads only contend
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    world = generate(world_opts)
    s = split(world)
    seconds["world_and_split"] = time.perf_counter() - t
    metrics: dict[str, dict[str, float]] = {}
    # popularity: the most interacted-with items of the history; conversion = the item's smoothed rate
    counts = item_features(world, s.t_history)[:, ITEM_FEATURES.index("views")]
    conv_col = 7  # CONTEXT_FEATURES.index("item_conversion_rate")
    metrics["popularity"] = {
        **ranking(np.tile(counts, (world.n_users, 1)), s.test_items, s.seen),
        "conversion_auc": auc(s.test.bought, s.test.context[:, conv_col]),
    }
    losses: dict[str, list[float]] = {}
    heads: dict[str, Any] = {}
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, layers in (("matrix_factorization", 0), ("lightgcn", graph.layers)):
        t = time.perf_counter()
        opts = GraphOptions(**{**asdict(graph), "layers": layers})
        users, items, loss = train_embeddings(s.edges, world.n_users, world.n_items, opts)
        metrics[name], heads[name] = _evaluate(world, s, users, items, graph.seed)
        losses[name] = loss
        tables[name] = (users, items)
        seconds[name] = time.perf_counter() - t
    version = export.new_version(out)
    info_world = {**asdict(world_opts), "events": len(world.event_user), "sessions": world.n_sessions}
    info_split = {
        "history_days": s.t_history / 86400.0,
        "head_days": s.t_head / 86400.0,
        "history_edges": float(len(s.edges)),
        "head_views": float(len(s.head.user)),
        "test_views": float(len(s.test.user)),
        "test_users": float(len(s.test_items)),
    }
    path = None
    if out is not None:
        users, items = tables["lightgcn"]
        onnx = export.onnx_bytes(users, items, heads["lightgcn"])
        path = export.write(
            out,
            version,
            onnx,
            [world.user_id(u) for u in range(world.n_users)],
            [world.item_id(i) for i in range(world.n_items)],
            {f"{m}.{k}": v for m, d in metrics.items() for k, v in d.items()},
            {"world": info_world, "split": info_split, "graph": asdict(graph), "k": K},
            activate=activate,
        )
    return Outcome(version, metrics, losses, info_world, info_split, seconds, path)
