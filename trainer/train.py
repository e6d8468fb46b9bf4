"""The training pipeline: data, time split, the GNN (daily graph snapshots), the HistGradientBoosting baseline.

Point in time, everywhere:
- tabular features of a transaction are as of its own timestamp (offline store, or the numpy subset);
- the GNN embeddings a transaction sees come from the snapshot at the start of its day: edges first seen before
  that instant, and fraud labels known before it (for a training transaction that is also before the training
  cut-off). This is what serving sees when the embedding refresh runs daily;
- training labels are those known at the training cut-off (`label_time < train_end`); validation drives early
  stopping and the risk thresholds; the test window is only scored, never tuned on.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from feature_svc.world import FRAUD_KINDS, World
from inference_svc.tx_features import FEATURE_NAMES as TX_FEATURE_NAMES
from trainer import metrics
from trainer.data import US_PER_DAY, Ledger, Split, ledger_from_world, train_labels, tx_field_matrix
from trainer.features import Tabular, local_features, offline_features
from trainer.gnn import NODE_TYPES, Encoder, Head
from trainer.snapshot import LINKS, EdgeTable, Snapshot, edge_table, snapshot

log = logging.getLogger("fraudmesh.trainer")


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 30
    patience: int = 5
    hidden: int = 32
    dim: int = 16
    layers: int = 2
    head_hidden: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-5
    pos_weight: float = 10.0
    val_days: int = 7
    test_days: int = 7
    threads: int = 2
    baseline_iter: int = 300
    use_embeddings: bool = True  # False: the head alone (ablation: what the graph adds)
    ablation: bool = True  # also train the head alone, to report what the embeddings add
    progress: bool = True


@dataclass
class Prepared:
    ledger: Ledger
    edges: EdgeTable
    split: Split
    tab: Tabular
    tx_x: np.ndarray  # (rows, len(TX_FEATURE_NAMES)) float32
    day: np.ndarray  # day index of each row (its snapshot)
    part: np.ndarray  # 0 train, 1 validation, 2 test
    y_train: np.ndarray  # labels known at the training cut-off
    y_true: np.ndarray  # eventual labels
    kind: np.ndarray
    weight: np.ndarray
    snapshots: list[Snapshot] = field(repr=False)

    @property
    def tab_names(self) -> list[str]:
        return self.tab.names

    def ent(self, etype: str) -> np.ndarray:
        """Entity index of each row; -1 (absent) maps to the type's extra 'unseen' node."""
        idx = self.ledger.ent[etype][self.tab.rows]
        return np.where(idx >= 0, idx, self.ledger.n_nodes(etype))


def prepare(world: World, offline_dir: str | Path | None, cfg: TrainConfig) -> Prepared:
    ledger = ledger_from_world(world)
    split = Split.by_days(ledger.start_us, ledger.days, cfg.val_days, cfg.test_days)
    if offline_dir is not None:
        tab = offline_features(offline_dir, ledger)
        assert tab.tx_table is not None
        tx_x = tx_field_matrix(_with_currency(tab.tx_table, world))
    else:
        tab = local_features(ledger)
        tx_x = tx_field_matrix(world.transactions.take(tab.rows))
    rows = tab.rows
    ts = ledger.ts[rows]
    edges = edge_table(ledger)
    snapshots = [snapshot(ledger, edges, ledger.start_us + d * US_PER_DAY) for d in range(ledger.days + 1)]
    return Prepared(
        ledger=ledger,
        edges=edges,
        split=split,
        tab=tab,
        tx_x=tx_x,
        day=ledger.day_of(ts).astype(np.int64),
        part=split.part(ts),
        y_train=train_labels(ledger.is_fraud[rows], ledger.label_time[rows], split),
        y_true=ledger.is_fraud[rows],
        kind=ledger.kind[rows],
        weight=tab.weight,
        snapshots=snapshots,
    )


def _with_currency(table, world: World):  # type: ignore[no-untyped-def]
    """The offline store has no currency column; take it from the ledger so featurize sees the same input."""
    if "currency" in table.column_names:
        return table
    import pyarrow.compute as pc

    tx = world.transactions
    idx = pc.index_in(table["transaction_id"], value_set=tx["transaction_id"].combine_chunks())
    return table.append_column("currency", tx["currency"].take(idx))


def snapshot_tensors(snap: Snapshot) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tensors of a snapshot, with one extra all-zero, edge-less node per type: the 'unseen entity' node."""
    x = {t: torch.from_numpy(np.vstack([snap.x[t], np.zeros((1, snap.x[t].shape[1]), np.float32)])) for t in NODE_TYPES}
    e = {link: torch.from_numpy(snap.edges[link]) for link in LINKS}
    return x, e


def embed_day(encoder: Encoder, prep: Prepared, day: int) -> dict[str, torch.Tensor]:
    """Embeddings of every node (plus the unseen node) from the snapshot at the start of `day`; all zeros when the
    encoder is switched off (`use_embeddings=False`, the head-only ablation)."""
    x, e = snapshot_tensors(prep.snapshots[day])
    if not getattr(encoder, "enabled", True):
        return {t: torch.zeros((x[t].shape[0], encoder.dim)) for t in NODE_TYPES}
    return encoder(x, e)


def head_input(prep: Prepared, rows: np.ndarray, emb: dict[str, torch.Tensor]) -> torch.Tensor:
    """[tx fields | registry features | card, merchant, device, ip embeddings] for the given prepared rows."""
    raw = torch.from_numpy(np.hstack([prep.tx_x[rows], prep.tab.x[rows].astype(np.float32)]))
    parts = [raw] + [emb[t][torch.from_numpy(prep.ent(t)[rows])] for t in NODE_TYPES]
    return torch.cat(parts, dim=1)


def standardisation(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    train = prep.part == 0
    raw = torch.from_numpy(np.hstack([prep.tx_x[train], prep.tab.x[train].astype(np.float32)]))
    z = Head.transform(raw, prep.tx_x.shape[1]).numpy().astype(np.float64)
    mean, std = z.mean(0), z.std(0)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


@torch.no_grad()
def predict(encoder: Encoder, head: Head, prep: Prepared, mask: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Scores of the masked rows (and their head input matrix), each row with its own day's snapshot."""
    encoder.eval()
    head.eval()
    rows_all = np.flatnonzero(mask)
    out = np.empty(len(rows_all), dtype=np.float32)
    inputs: list[torch.Tensor] = []
    order: list[np.ndarray] = []
    for d in np.unique(prep.day[rows_all]):
        sel = rows_all[prep.day[rows_all] == d]
        emb = embed_day(encoder, prep, d)
        x = head_input(prep, sel, emb)
        inputs.append(x)
        order.append(sel)
    if not inputs:
        return out, torch.zeros((0, 0))
    x_all = torch.cat(inputs)
    sel_all = np.concatenate(order)
    p = head(x_all).numpy()
    pos = np.searchsorted(rows_all, sel_all)
    out[pos] = p
    x_sorted = torch.empty_like(x_all)
    x_sorted[torch.from_numpy(pos)] = x_all
    return out, x_sorted


def train_gnn(prep: Prepared, cfg: TrainConfig) -> tuple[Encoder, Head, dict]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    encoder = Encoder(cfg.hidden, cfg.dim, cfg.layers)
    encoder.enabled = cfg.use_embeddings
    mean, std = standardisation(prep)
    head = Head(prep.tx_x.shape[1], len(prep.tab_names), cfg.dim, mean, std, cfg.head_hidden)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(cfg.pos_weight), reduction="none")
    train_rows = np.flatnonzero(prep.part == 0)
    train_days = np.unique(prep.day[train_rows])
    val = prep.part == 1
    best = {"val_pr_auc": -1.0, "epoch": -1}
    best_state = None
    history: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc="training GNN", unit="epoch", disable=not cfg.progress)
    for epoch in bar:
        encoder.train()
        head.train()
        losses = []
        for d in rng.permutation(train_days):
            sel = train_rows[prep.day[train_rows] == d]
            emb = embed_day(encoder, prep, d)
            x = head_input(prep, sel, emb)
            y = torch.from_numpy(prep.y_train[sel].astype(np.float32))
            w = torch.from_numpy(prep.weight[sel].astype(np.float32))
            loss = (loss_fn(head.logit(x), y) * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        p_val, _ = predict(encoder, head, prep, val)
        m = metrics.scores(prep.y_true[val], p_val, prep.weight[val])
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "val_pr_auc": m["pr_auc"]})
        if m["pr_auc"] > best["val_pr_auc"]:
            best = {"val_pr_auc": m["pr_auc"], "epoch": epoch}
            best_state = (copy.deepcopy(encoder.state_dict()), copy.deepcopy(head.state_dict()))
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_pr_auc=f"{m['pr_auc']:.4f}", best=best["epoch"])
        if epoch - best["epoch"] >= cfg.patience:
            break
    assert best_state is not None
    encoder.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    encoder.eval()
    head.eval()
    return encoder, head, {"best": best, "history": history, "epochs_run": len(history)}


def baseline_matrix(prep: Prepared) -> np.ndarray:
    return np.hstack([prep.tx_x.astype(np.float64), prep.tab.x])


BASELINE_GRID: tuple[dict, ...] = (
    {"learning_rate": 0.05, "max_iter": 300, "min_samples_leaf": 20, "l2_regularization": 0.0},
    {"learning_rate": 0.05, "max_iter": 100, "min_samples_leaf": 20, "l2_regularization": 0.0},
    {"learning_rate": 0.1, "max_iter": 100, "min_samples_leaf": 100, "l2_regularization": 1.0},
    {"learning_rate": 0.05, "max_iter": 200, "min_samples_leaf": 200, "l2_regularization": 1.0},
    {"learning_rate": 0.03, "max_iter": 100, "min_samples_leaf": 50, "l2_regularization": 1.0, "max_depth": 4},
)


def train_baseline(prep: Prepared, cfg: TrainConfig):  # type: ignore[no-untyped-def]
    """HistGradientBoosting on [tx fields | registry features], same rows, labels and weights as the GNN; its
    hyper-parameters are chosen on validation PR-AUC from a small grid (the test window is never looked at)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = baseline_matrix(prep)
    train, val = prep.part == 0, prep.part == 1
    best, best_ap, tried = None, -1.0, []
    grid = BASELINE_GRID if cfg.baseline_iter > 0 else BASELINE_GRID[:1]
    for params in grid:
        params = {**params, "max_iter": min(params["max_iter"], cfg.baseline_iter or params["max_iter"])}
        clf = HistGradientBoostingClassifier(max_leaf_nodes=31, early_stopping=False, random_state=cfg.seed, **params)
        clf.fit(x[train], prep.y_train[train], sample_weight=prep.weight[train])
        ap = metrics.scores(prep.y_true[val], clf.predict_proba(x[val])[:, 1], prep.weight[val])["pr_auc"]
        tried.append({**params, "val_pr_auc": ap})
        if ap > best_ap:
            best, best_ap = clf, ap
    assert best is not None
    best.grid_ = tried  # type: ignore[attr-defined]
    return best


def thresholds_from_validation(score: np.ndarray, y: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Risk levels by the false-positive rate they cost on validation legit traffic: medium flags 5% of legit,
    high 1%, critical 0.1%."""
    legit = ~y.astype(bool)
    q = {
        name: metrics.weighted_quantile(score[legit], weight[legit], 1 - fpr)
        for name, fpr in (("medium", 0.05), ("high", 0.01), ("critical", 0.001))
    }
    q["high"] = max(q["high"], np.nextafter(q["medium"], 1.0))
    q["critical"] = max(q["critical"], np.nextafter(q["high"], 1.0))
    return {k: float(v) for k, v in q.items()}


@dataclass
class Result:
    cfg: TrainConfig
    prep: Prepared
    encoder: Encoder
    head: Head
    baseline: object
    gnn_info: dict
    thresholds: dict[str, float]
    baseline_thresholds: dict[str, float]
    test_scores: dict[str, np.ndarray]
    metrics: dict
    seconds: dict[str, float]

    def config_json(self) -> dict:
        return asdict(self.cfg)


def run(world: World, offline_dir: str | Path | None, cfg: TrainConfig) -> Result:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    t0 = time.perf_counter()
    prep = prepare(world, offline_dir, cfg)
    t1 = time.perf_counter()
    encoder, head, info = train_gnn(prep, cfg)
    t2 = time.perf_counter()
    clf = train_baseline(prep, cfg)
    t3 = time.perf_counter()
    val, test = prep.part == 1, prep.part == 2
    ablation: dict[str, np.ndarray] = {}
    if cfg.ablation and cfg.use_embeddings:
        enc0, head0, _ = train_gnn(prep, replace(cfg, use_embeddings=False, progress=False))
        ablation["head_only"] = predict(enc0, head0, prep, test)[0]
    t4 = time.perf_counter()
    p_val, _ = predict(encoder, head, prep, val)
    p_test, _ = predict(encoder, head, prep, test)
    x = baseline_matrix(prep)
    b_val = clf.predict_proba(x[val])[:, 1]
    b_test = clf.predict_proba(x[test])[:, 1]
    kinds = tuple(FRAUD_KINDS)
    result_metrics = {
        "validation": {
            "gnn": metrics.by_kind(prep.y_true[val], prep.kind[val], p_val, prep.weight[val], kinds),
            "baseline": metrics.by_kind(prep.y_true[val], prep.kind[val], b_val, prep.weight[val], kinds),
        },
        "test": {
            "gnn": metrics.by_kind(prep.y_true[test], prep.kind[test], p_test, prep.weight[test], kinds),
            "baseline": metrics.by_kind(prep.y_true[test], prep.kind[test], b_test, prep.weight[test], kinds),
            **{
                k: metrics.by_kind(prep.y_true[test], prep.kind[test], v, prep.weight[test], kinds)
                for k, v in ablation.items()
            },
        },
    }
    return Result(
        cfg=cfg,
        prep=prep,
        encoder=encoder,
        head=head,
        baseline=clf,
        gnn_info=info,
        thresholds=thresholds_from_validation(p_val, prep.y_true[val], prep.weight[val]),
        baseline_thresholds=thresholds_from_validation(b_val, prep.y_true[val], prep.weight[val]),
        test_scores={
            "gnn": p_test,
            "baseline": b_test.astype(np.float32),
            **ablation,
            "y": prep.y_true[test],
            "kind": prep.kind[test].astype(str),
            "weight": prep.weight[test],
            "transaction_id": prep.ledger.tx_id[prep.tab.rows[test]].astype(str),
        },
        metrics=result_metrics,
        seconds={
            "prepare": round(t1 - t0, 1),
            "gnn": round(t2 - t1, 1),
            "baseline": round(t3 - t2, 1),
            "ablation": round(t4 - t3, 1),
        },
    )


TX_NAMES = list(TX_FEATURE_NAMES)
