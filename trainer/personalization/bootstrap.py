"""The personalization bootstrap model (kind `pers-bootstrap`): what `fraudmesh up` serves on a fresh clone, without
torch. Matrix factorisation by a truncated SVD of the history's weighted user-item matrix (numpy), one popularity
column, and a logistic conversion head (scikit-learn), written as an ONNX graph by hand (onnx.helper) with the same
inputs and outputs as the LightGCN export (trainer/personalization/export.py), so the inference worker serves either.

It is trained on a small seeded world (`WORLD`) in seconds; `fraudmesh train --family personalization` (the train
extra) trains the LightGCN model that replaces it. Needs the bootstrap extra (scikit-learn, onnx), never torch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from feature_svc.world.personalization.features import (
    CONTEXT_FEATURES,
    FEATURE_SET_VERSION,
    ITEM_FEATURES,
    item_features,
)
from feature_svc.world.personalization.world import CART, PURCHASE, World, WorldOptions, generate, options_of
from trainer.personalization.data import Split, split
from trainer.personalization.evaluate import K, auc, ranking

KIND = "pers-bootstrap"
WORLD = WorldOptions(users=800, items=400, days=30)
"""The bootstrap's world: small enough to simulate, train and load into Redis in seconds on `fraudmesh up`."""
DIM = 16
INPUTS = ("user_index", "item_index", "context")
OUTPUTS = ("relevance", "affinity", "conversion")
OPSET = 17
EVENT_WEIGHT = {CART: 2.0, PURCHASE: 4.0}  # a view counts 1


def world_options(metadata: dict[str, Any]) -> WorldOptions:
    """The world a personalization model was trained on (`feature_svc.world.personalization.world.options_of`)."""
    return options_of(metadata)


def factorise(world: World, s: Split, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """User and item embeddings [U, dim+1], [I, dim+1]: the top singular vectors of log1p(weighted interactions
    of the history), plus a popularity column (the item's log views, the same weight for every user)."""
    hist = world.event_time < s.t_history
    weight = np.ones(int(hist.sum()))
    for kind, w in EVENT_WEIGHT.items():
        weight[world.event_type[hist] == kind] = w
    m = np.zeros((world.n_users, world.n_items))
    np.add.at(m, (world.event_user[hist], world.event_item[hist]), weight)
    m = np.log1p(m)
    u, sv, vt = np.linalg.svd(m, full_matrices=False)
    k = min(dim, len(sv))
    root = np.sqrt(sv[:k])
    pop = np.log1p(item_features(world, s.t_history)[:, ITEM_FEATURES.index("views")])
    pop = pop / max(float(pop.max()), 1e-9)
    users = np.hstack([u[:, :k] * root, np.full((world.n_users, 1), 0.05)])
    items = np.hstack([vt[:k].T * root, pop[:, None]])
    return users.astype(np.float32), items.astype(np.float32)


def _head(users: np.ndarray, items: np.ndarray, v: Any) -> tuple[np.ndarray, float]:
    """Logistic regression over [affinity, context] of the head's views, folded back to raw inputs: weights
    [1 + len(CONTEXT_FEATURES)] and the intercept."""
    from sklearn.linear_model import LogisticRegression

    x = np.hstack([(users[v.user] * items[v.item]).sum(-1, keepdims=True), v.context]).astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(max_iter=500, C=1.0).fit((x - mean) / std, v.bought)
    w = clf.coef_[0] / std
    return w.astype(np.float32), float(clf.intercept_[0] - (w * mean).sum())


def onnx_bytes(users: np.ndarray, items: np.ndarray, w: np.ndarray, b: float) -> bytes:
    """The served graph: cold rows (the mean embedding) appended to both tables, relevance = share of all items
    ranked below this one by the user's affinity, conversion = sigmoid(w . [affinity, context] + b)."""
    from onnx import TensorProto, helper, numpy_helper

    u_tab = np.vstack([users, users.mean(0, keepdims=True)]).astype(np.float32)
    i_tab = np.vstack([items, items.mean(0, keepdims=True)]).astype(np.float32)
    inits = [
        numpy_helper.from_array(u_tab, "users"),
        numpy_helper.from_array(i_tab, "items"),
        numpy_helper.from_array(np.ascontiguousarray(items.T.astype(np.float32)), "items_t"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(w[1:].reshape(-1, 1).astype(np.float32), "w_context"),
        numpy_helper.from_array(np.array(w[0], np.float32), "w_affinity"),
        numpy_helper.from_array(np.array(b, np.float32), "bias"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["users", "user_index"], ["u"], axis=0),
        n("Gather", ["items", "item_index"], ["i"], axis=0),
        n("Mul", ["u", "i"], ["ui"]),
        n("ReduceSum", ["ui", "axis1"], ["affinity"], keepdims=0),
        n("MatMul", ["u", "items_t"], ["every"]),
        n("Unsqueeze", ["affinity", "axis1"], ["affinity_col"]),
        n("Less", ["every", "affinity_col"], ["below"]),
        n("Cast", ["below"], ["below_f"], to=TensorProto.FLOAT),
        n("ReduceMean", ["below_f"], ["relevance"], axes=[1], keepdims=0),
        n("MatMul", ["context", "w_context"], ["ctx_col"]),
        n("Squeeze", ["ctx_col", "axis1"], ["ctx_logit"]),
        n("Mul", ["affinity", "w_affinity"], ["aff_logit"]),
        n("Add", ["ctx_logit", "aff_logit"], ["logit0"]),
        n("Add", ["logit0", "bias"], ["logit"]),
        n("Sigmoid", ["logit"], ["conversion"]),
    ]
    graph = helper.make_graph(
        nodes,
        KIND,
        [
            helper.make_tensor_value_info("user_index", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("item_index", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("context", TensorProto.FLOAT, ["n", len(CONTEXT_FEATURES)]),
        ],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]) for name in OUTPUTS],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fraudmesh")
    model.ir_version = 8
    return bytes(model.SerializeToString())


def train_bootstrap(out: Path, opts: WorldOptions = WORLD, activate: bool = True) -> dict[str, Any]:
    """Simulate `opts`, factorise its history, fit the head, evaluate on the test split, write
    `<out>/<version>/{model.onnx, ids.json, metadata.json}` (and `<out>/active`). Returns the metadata."""
    world = generate(opts)
    s = split(world)
    users, items = factorise(world, s)
    w, b = _head(users, items, s.head)
    t = s.test
    p_test = 1.0 / (1.0 + np.exp(-((users[t.user] * items[t.item]).sum(-1) * w[0] + t.context @ w[1:] + b)))
    counts = item_features(world, s.t_history)[:, ITEM_FEATURES.index("views")]
    rank = {k: v for k, v in ranking(users @ items.T, s.test_items, s.seen).items() if k != "users"}
    pop = {k: v for k, v in ranking(np.tile(counts, (world.n_users, 1)), s.test_items, s.seen).items() if k != "users"}
    metrics = {
        **{f"{KIND}.{k}": round(v, 4) for k, v in rank.items()},
        f"{KIND}.conversion_auc": round(auc(t.bought, p_test), 4),
        **{f"popularity.{k}": round(v, 4) for k, v in pop.items()},
    }
    version = f"{KIND}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    n = 1
    while (out / version).exists():
        n += 1
        version = f"{KIND}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{n}"
    base = out / version
    base.mkdir(parents=True, exist_ok=True)
    (base / "model.onnx").write_bytes(onnx_bytes(users, items, w, b))
    ids = {
        "users": [world.user_id(k) for k in range(world.n_users)],
        "items": [world.item_id(k) for k in range(world.n_items)],
    }
    (base / "ids.json").write_text(json.dumps(ids))
    meta: dict[str, Any] = {
        "family": "personalization",
        "version": version,
        "kind": KIND,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "feature_set_version": FEATURE_SET_VERSION,
        "context_features": list(CONTEXT_FEATURES),
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "metrics": metrics,
        "training": {
            "source": "bootstrap: truncated SVD + popularity column + logistic conversion head (numpy, scikit-learn)",
            "world": {**asdict(opts), "events": len(world.event_user), "sessions": world.n_sessions},
            "dim": DIM,
            "k": K,
        },
    }
    (base / "metadata.json").write_text(json.dumps(meta, indent=2))
    if activate:
        tmp = out / ".active.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, out / "active")
    return meta
