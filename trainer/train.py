"""The training pipeline: data, time split, the GNN (daily graph snapshots), the HistGradientBoosting baseline.

Point in time, everywhere:
- tabular features of a transaction are as of its own timestamp (offline store, or the numpy subset);
- the GNN embeddings a transaction sees come from the snapshot at the start of its day: edges first seen before
  that instant, and fraud labels known before it (for a training transaction that is also before the training
  cut-off). This is what serving sees when the embedding refresh runs daily;
- training labels are those known at the training cut-off (`label_time < train_end`), an unlabelled row weighted
  by its maturity F(age) (trainer.maturity), for every model alike;
- early stopping, the baseline's settings and model choices use the validation rows with the labels known at the
  validation cut-off (`label_time < val_end`, maturity-weighted), never eventual ones; the risk bands are the
  top 5% / 1% / 0.1% of validation traffic by score (no labels at all); calibration is fitted on validation with
  the labels known at its cut-off (trainer.calibration); the test window is only scored, never tuned on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from feature_svc.world import FRAUD_KINDS, World
from inference_svc.tx_features import FEATURE_NAMES as TX_FEATURE_NAMES
from trainer import maturity, metrics
from trainer.data import Ledger, Split, ledger_from_world, train_labels, tx_field_matrix
from trainer.features import Tabular, local_features, offline_features, sample_legit
from trainer.gnn import NODE_TYPES, Encoder, Head
from trainer.snapshot import LINKS, DailySnapshots, EdgeTable, Snapshot, edge_table

log = logging.getLogger("fraudmesh.trainer")


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 30
    patience: int = 5
    hidden: int = 32
    dim: int = 16
    layers: int = 3  # 3 beat 2 on validation (labels known at its cut-off): ring 0.121 vs 0.089, all 0.546 vs 0.541
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
    emb_gbm: bool = True  # also fit gradient boosting on [fields | registry | GNN embeddings]
    legit_fraction: float = 1.0  # local features only: keep this share of legit rows (weighted 1/fraction)
    batch_size: int = 0  # 0: one step per training day on its full snapshot; n: neighbour-sampled batches of n rows
    fanout: tuple[int, ...] = (10, 10, 10)  # neighbours sampled per node and edge type at each hop (one per layer)
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
    w_train: np.ndarray  # sampling weight x maturity weight at the training cut-off
    y_val_known: np.ndarray  # labels known at the validation cut-off (for choices made on validation)
    w_val_known: np.ndarray
    delay: dict  # the label-delay distributions estimated at each cut-off (for the report)
    y_true: np.ndarray  # eventual labels
    kind: np.ndarray
    weight: np.ndarray
    snapshots: DailySnapshots = field(repr=False)

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
        # the sample is a property of the data, not of the training seed: every seed sees the same rows
        rows = None if cfg.legit_fraction >= 1.0 else sample_legit(ledger, cfg.legit_fraction, seed=0)
        tab = local_features(ledger, rows)
        if rows is not None:
            tab.weight = np.where(ledger.is_fraud[rows], 1.0, 1.0 / cfg.legit_fraction)
        tx_x = tx_field_matrix(world.transactions.take(tab.rows))
    rows = tab.rows
    ts = ledger.ts[rows]
    edges = edge_table(ledger)
    snapshots = DailySnapshots(ledger, edges, ledger.days, ledger.start_us)
    lt, fraud = ledger.label_time[rows], ledger.is_fraud[rows]
    cdf_train = maturity.delay_cdf(ledger.ts, ledger.label_time, ledger.is_fraud, split.train_end)
    cdf_val = maturity.delay_cdf(ledger.ts, ledger.label_time, ledger.is_fraud, split.val_end)
    y_tr, w_tr = maturity.maturity_weights(ts, lt, fraud, split.train_end, cdf_train)
    y_vk, w_vk = maturity.known_target(ts, lt, fraud, split.val_end, cdf_val, tab.weight)
    return Prepared(
        ledger=ledger,
        edges=edges,
        split=split,
        tab=tab,
        tx_x=tx_x,
        day=ledger.day_of(ts).astype(np.int64),
        part=split.part(ts),
        y_train=train_labels(ledger.is_fraud[rows], ledger.label_time[rows], split) & y_tr,
        w_train=tab.weight * w_tr,
        y_val_known=y_vk,
        w_val_known=w_vk,
        delay={"train_cutoff": cdf_train.to_json(), "validation_cutoff": cdf_val.to_json()},
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


def head_input(
    prep: Prepared, rows: np.ndarray, emb: dict[str, torch.Tensor], index: dict[str, np.ndarray] | None = None
) -> torch.Tensor:
    """[tx fields | registry features | card, merchant, device, ip embeddings] for the given prepared rows; `emb`
    is indexed by entity id, or by `index` (each row's node in a sampled subgraph) when given."""
    raw = torch.from_numpy(np.hstack([prep.tx_x[rows], prep.tab.x[rows].astype(np.float32)]))
    at = index if index is not None else {t: prep.ent(t)[rows] for t in NODE_TYPES}
    parts = [raw] + [emb[t][torch.from_numpy(at[t])] for t in NODE_TYPES]
    return torch.cat(parts, dim=1)


def day_inputs(
    encoder: Encoder, prep: Prepared, day: int, rows: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """The optimiser steps of one training day: (rows, head input) once on the full snapshot (`batch_size` 0), or
    per neighbour-sampled mini-batch (trainer.minibatch)."""
    if cfg.batch_size <= 0:
        yield rows, head_input(prep, rows, embed_day(encoder, prep, day))
        return
    from trainer.minibatch import sampled_batches
    from trainer.sampler import SnapshotGraph

    graph = SnapshotGraph.of(prep.snapshots[day])
    ent = {t: prep.ent(t)[rows] for t in NODE_TYPES}
    for pos, emb, index in sampled_batches(encoder, graph, ent, cfg.batch_size, cfg.fanout, rng):
        yield rows[pos], head_input(prep, rows[pos], emb, index)


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
    if cfg.batch_size > 0 and len(cfg.fanout) != cfg.layers:
        raise ValueError(f"fanout {cfg.fanout} needs one fan-out per GNN layer ({cfg.layers})")
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
            for sel, x in day_inputs(encoder, prep, d, train_rows[prep.day[train_rows] == d], cfg, rng):
                y = torch.from_numpy(prep.y_train[sel].astype(np.float32))
                w = torch.from_numpy(prep.w_train[sel].astype(np.float32))
                loss = (loss_fn(head.logit(x), y) * w).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        p_val, _ = predict(encoder, head, prep, val)
        # early stopping sees only the labels known at the validation cut-off
        m = metrics.scores(prep.y_val_known[val], p_val, prep.w_val_known[val])
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "val_pr_auc": m["pr_auc"]})
        # no label known at the validation cut-off yet (tiny worlds): nothing to stop on, keep the latest epoch
        known = bool(np.isfinite(m["pr_auc"]))
        if not known or m["pr_auc"] > best["val_pr_auc"]:
            best = {"val_pr_auc": m["pr_auc"] if known else float("nan"), "epoch": epoch}
            best_state = (copy.deepcopy(encoder.state_dict()), copy.deepcopy(head.state_dict()))
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_pr_auc=f"{m['pr_auc']:.4f}", best=best["epoch"])
        if known and epoch - best["epoch"] >= cfg.patience:
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
    hyper-parameters are chosen from a small grid on validation PR-AUC with the labels known at the validation
    cut-off (the test window is never looked at). The same censoring treatment as the GNN: maturity weights."""
    return fit_gbm(baseline_matrix(prep), prep, cfg)


def fit_gbm(x: np.ndarray, prep: Prepared, cfg: TrainConfig):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import HistGradientBoostingClassifier

    train, val = prep.part == 0, prep.part == 1
    fitted, val_scores, tried = [], [], []
    grid = BASELINE_GRID if cfg.baseline_iter > 0 else BASELINE_GRID[:1]
    for params in grid:
        params = {**params, "max_iter": min(params["max_iter"], cfg.baseline_iter or params["max_iter"])}
        clf = HistGradientBoostingClassifier(max_leaf_nodes=31, early_stopping=False, random_state=cfg.seed, **params)
        clf.fit(x[train], prep.y_train[train], sample_weight=prep.w_train[train])
        fitted.append(clf)
        val_scores.append(clf.predict_proba(x[val])[:, 1])
        tried.append(params)
    best, aps = maturity.choose(val_scores, prep.y_val_known[val], prep.w_val_known[val])
    clf = fitted[best]
    clf.grid_ = [{**p, "val_known_pr_auc": a} for p, a in zip(tried, aps, strict=True)]  # type: ignore[attr-defined]
    return clf


BANDS: tuple[tuple[str, float], ...] = (("medium", 0.05), ("high", 0.01), ("critical", 0.001))


def thresholds_from_validation(score: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Risk levels by the share of validation traffic they flag: medium the top 5%, high 1%, critical 0.1%.
    No labels are used, so no label from after the validation cut-off can move them."""
    q = {name: metrics.weighted_quantile(score, weight, 1 - rate) for name, rate in BANDS}
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
    choices: dict = field(default_factory=dict)  # per model: thresholds and calibration, made on validation
    emb_gbm: object | None = None  # gradient boosting on the head's inputs [fields | registry | embeddings]
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # the process's peak RSS at the end of each phase
    val_scores: dict[str, np.ndarray] = field(default_factory=dict)  # per model, validation rows (trainer.heads)
    head_x: torch.Tensor | None = None  # every prepared row's head input (trainer.heads refits on it)

    def config_json(self) -> dict:
        return asdict(self.cfg)


def incident_of_rows(world: World, prep: Prepared, rows: np.ndarray) -> np.ndarray:
    """The incident id of each prepared row ('' for legit rows, or `<kind>-card-<card>` for worlds without
    an incidents table: one incident per card and kind)."""
    tx_ids = prep.ledger.tx_id[prep.tab.rows[rows]]
    out = np.full(len(rows), "", dtype=object)
    fraud = prep.y_true[rows]
    if world.incidents is not None:
        lookup = dict(
            zip(world.incidents["transaction_id"].to_pylist(), world.incidents["incident_id"].to_pylist(), strict=True)
        )
        out[fraud] = [lookup.get(t, "") for t in tx_ids[fraud]]
    else:
        cards = prep.ledger.ent["card"][prep.tab.rows[rows]]
        out[fraud] = [f"{k}-card-{c}" for k, c in zip(prep.kind[rows][fraud], cards[fraud], strict=True)]
    return out


def _peak_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(world: World, offline_dir: str | Path | None, cfg: TrainConfig) -> Result:
    from trainer import calibration

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    t0 = time.perf_counter()
    rss: dict[str, float] = {}
    prep = prepare(world, offline_dir, cfg)
    t1 = time.perf_counter()
    rss["prepare"] = _peak_rss_mib()
    encoder, head, info = train_gnn(prep, cfg)
    t2 = time.perf_counter()
    rss["gnn"] = _peak_rss_mib()
    clf = train_baseline(prep, cfg)
    t3 = time.perf_counter()
    rss["baseline"] = _peak_rss_mib()
    val, test = prep.part == 1, prep.part == 2
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # model -> (validation, test) scores
    p_all, x_all = predict(encoder, head, prep, np.ones(len(prep.part), dtype=bool))
    scores["gnn"] = (p_all[val], p_all[test])
    x = baseline_matrix(prep)
    scores["baseline"] = (clf.predict_proba(x[val])[:, 1], clf.predict_proba(x[test])[:, 1])
    if cfg.ablation and cfg.use_embeddings:
        enc0, head0, _ = train_gnn(prep, replace(cfg, use_embeddings=False, progress=False))
        h_all, _ = predict(enc0, head0, prep, np.ones(len(prep.part), dtype=bool))
        scores["head_only"] = (h_all[val], h_all[test])
    t4 = time.perf_counter()
    rss["ablation"] = _peak_rss_mib()
    if cfg.emb_gbm and cfg.use_embeddings:
        x_emb = np.hstack([x, x_all[:, x.shape[1] :].numpy().astype(np.float64)])
        clf_emb = fit_gbm(x_emb, prep, cfg)
        scores["emb_gbm"] = (clf_emb.predict_proba(x_emb[val])[:, 1], clf_emb.predict_proba(x_emb[test])[:, 1])
    else:
        clf_emb = None
    t5 = time.perf_counter()
    rss["emb_gbm"] = _peak_rss_mib()
    kinds = tuple(FRAUD_KINDS)
    w_val, w_test = prep.weight[val], prep.weight[test]
    cdf_val = maturity.delay_cdf(prep.ledger.ts, prep.ledger.label_time, prep.ledger.is_fraud, prep.split.val_end)
    f_age = cdf_val(prep.split.val_end - prep.ledger.ts[prep.tab.rows[val]])
    choices: dict[str, dict] = {}
    test_scores: dict[str, np.ndarray] = {}
    for name, (s_val, s_test) in scores.items():
        cal = calibration.fit(s_val, prep.y_val_known[val], f_age, w_val)
        choices[name] = {"thresholds": thresholds_from_validation(s_val, w_val), "calibration": cal.to_json()}
        test_scores[name] = s_test.astype(np.float32)
        test_scores[f"{name}_calibrated"] = cal(s_test).astype(np.float32)
    result_metrics = {
        "validation_known": {
            name: metrics.by_kind(prep.y_val_known[val], prep.kind[val], s_val, prep.w_val_known[val], kinds)
            for name, (s_val, _) in scores.items()
        },
        "test": {
            name: metrics.by_kind(prep.y_true[test], prep.kind[test], s_test, w_test, kinds)
            for name, (_, s_test) in scores.items()
        },
    }
    return Result(
        cfg=cfg,
        prep=prep,
        encoder=encoder,
        head=head,
        baseline=clf,
        gnn_info=info,
        thresholds=choices["gnn"]["thresholds"],
        baseline_thresholds=choices["baseline"]["thresholds"],
        test_scores={
            **test_scores,
            "y": prep.y_true[test],
            "kind": prep.kind[test].astype(str),
            "weight": w_test,
            "incident": incident_of_rows(world, prep, np.flatnonzero(test)).astype(str),
            "transaction_id": prep.ledger.tx_id[prep.tab.rows[test]].astype(str),
        },
        metrics=result_metrics,
        seconds={
            "prepare": round(t1 - t0, 1),
            "gnn": round(t2 - t1, 1),
            "baseline": round(t3 - t2, 1),
            "ablation": round(t4 - t3, 1),
            "emb_gbm": round(t5 - t4, 1),
        },
        choices=choices,
        emb_gbm=clf_emb,
        peak_rss_mib=rss,
        val_scores={name: s_val for name, (s_val, _) in scores.items()},
        head_x=x_all,
    )


TX_NAMES = list(TX_FEATURE_NAMES)
