"""The heads over the GNN embeddings, and the choice of the served one on validation.

After the GNN is trained (encoder and its MLP head together), its embeddings are fixed; several heads can score
the same input row [tx fields | registry features | card, merchant, device, ip embeddings]:

- `mlp`: the GNN's own head, trained jointly with the encoder;
- `mlp_refit`: a fresh head on the frozen embeddings (TwoBlockHead: the tabular block and the standardised
  embeddings through their own layers, dropout on the tabular block so it cannot carry the score alone), early
  stopping on the validation labels known at the validation cut-off;
- `gbm`: gradient boosting on the same inputs (TrainConfig.emb_gbm, trainer.train.fit_gbm);
- `blend`: the mean of the `mlp` and `gbm` scores' ranks in validation traffic (each score mapped through the
  weighted distribution of its head's validation scores: no labels, so the blend's validation score is not
  fitted on the labels it is then judged by, as an average of calibrated probabilities would be).

`choose_head` picks the served one (among SERVABLE, the heads trainer.export can write) by one criterion fixed
before any result was seen: the overall PR-AUC on the validation week with the labels known at the validation
cut-off, maturity-weighted (`maturity.choose`), the same criterion as early stopping and the gradient-boosting
grid. The test week is never looked at.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer import maturity, metrics
from trainer.calibration import Calibrator
from trainer.gnn import Head

SELECTION_CRITERION = (
    "overall PR-AUC on the validation week, labels known at the validation cut-off, maturity-weighted "
    "(maturity.choose: the criterion of early stopping and the gradient-boosting grid)"
)
CANDIDATES: tuple[str, ...] = ("mlp", "mlp_refit", "gbm", "blend")
SERVABLE: tuple[str, ...] = ("mlp", "gbm")  # the heads trainer.export can write as an artifact


class TwoBlockHead(nn.Module):
    """Same input and output as trainer.gnn.Head (raw row in, probability out), built so the embeddings get used:
    the tabular block [tx fields | signed-log registry features], standardised and with input dropout, through
    one layer; the embeddings, standardised with their training means, through their own layer; then an MLP."""

    def __init__(
        self,
        n_tx: int,
        n_tab: int,
        dim: int,
        mean: np.ndarray,
        std: np.ndarray,
        emb_mean: np.ndarray,
        emb_std: np.ndarray,
        tab_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.n_tx, self.n_tab, self.dim = n_tx, n_tab, dim
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.register_buffer("emb_mean", torch.as_tensor(emb_mean, dtype=torch.float32))
        self.register_buffer("emb_std", torch.as_tensor(emb_std, dtype=torch.float32))
        self.tab = nn.Sequential(nn.Dropout(tab_dropout), nn.Linear(n_tx + n_tab, 64), nn.ReLU())
        self.emb = nn.Sequential(nn.Linear(4 * dim, 64), nn.ReLU())
        self.mlp = nn.Sequential(nn.Dropout(0.1), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 1))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_tx + self.n_tab
        z = (Head.transform(x[:, :k], self.n_tx) - self.mean) / self.std
        e = (x[:, k:] - self.emb_mean) / self.emb_std
        return self.mlp(torch.cat([self.tab(z), self.emb(e)], dim=1)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


@dataclass
class RefitData:
    """What refitting a head needs: every prepared row's head input, the split, training labels and weights, and
    the validation labels known at the validation cut-off."""

    x: torch.Tensor  # (rows, n_tx + n_tab + 4 dim) raw head inputs, embeddings from the trained encoder
    part: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray
    y_val_known: np.ndarray
    w_val_known: np.ndarray


def refit_head(
    data: RefitData,
    n_tx: int,
    n_tab: int,
    dim: int,
    mean: np.ndarray,
    std: np.ndarray,
    seed: int,
    pos_weight: float = 10.0,
    epochs: int = 60,
    patience: int = 8,
    batch: int = 1024,
    lr: float = 1e-3,
) -> tuple[TwoBlockHead, dict]:
    """A TwoBlockHead on the frozen embeddings, early-stopped on the validation labels known at its cut-off."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    k = n_tx + n_tab
    train, val = np.flatnonzero(data.part == 0), data.part == 1
    emb = data.x[torch.from_numpy(train), k:].numpy().astype(np.float64)
    e_std = emb.std(0)
    head = TwoBlockHead(n_tx, n_tab, dim, mean, std, emb.mean(0).astype(np.float32), np.where(e_std > 1e-6, e_std, 1.0))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-5)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight), reduction="none")
    y = torch.from_numpy(data.y_train.astype(np.float32))
    w = torch.from_numpy(data.w_train.astype(np.float32))
    x_val = data.x[torch.from_numpy(np.flatnonzero(val))]
    best: dict = {"val_pr_auc": -1.0, "epoch": -1}
    state = copy.deepcopy(head.state_dict())
    history = []
    for epoch in range(epochs):
        head.train()
        for b in np.array_split(rng.permutation(train), max(1, len(train) // batch)):
            idx = torch.from_numpy(b)
            loss = (loss_fn(head.logit(data.x[idx]), y[idx]) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            p = head(x_val).numpy()
        ap = metrics.scores(data.y_val_known[val], p, data.w_val_known[val])["pr_auc"]
        history.append({"epoch": epoch, "val_pr_auc": ap})
        if not np.isfinite(ap) or ap > best["val_pr_auc"]:
            best = {"val_pr_auc": ap, "epoch": epoch}
            state = copy.deepcopy(head.state_dict())
        if np.isfinite(ap) and epoch - best["epoch"] >= patience:
            break
    head.load_state_dict(state)
    head.eval()
    return head, {"best": best, "epochs_run": len(history)}


def traffic_rank(score: np.ndarray, weight: np.ndarray) -> Calibrator:
    """The weighted distribution of validation scores as a piecewise-linear map score -> share of traffic below."""
    order = np.argsort(score, kind="stable")
    xs, cw = score[order].astype(np.float64), np.cumsum(weight[order]) / np.sum(weight)
    last = np.r_[xs[1:] != xs[:-1], True]  # the cumulative share at the last copy of each distinct score
    return Calibrator(xs[last], cw[last])


def blend(p_mlp: np.ndarray, p_gbm: np.ndarray, rank_mlp: Calibrator, rank_gbm: Calibrator) -> np.ndarray:
    """The mean of the two heads' ranks in validation traffic."""
    return (0.5 * (rank_mlp(p_mlp) + rank_gbm(p_gbm))).astype(np.float32)


def choose_head(val_scores: dict[str, np.ndarray], y_known: np.ndarray, w_known: np.ndarray) -> tuple[str, dict]:
    """The head with the best SELECTION_CRITERION, and every candidate's value (ties: the earlier candidate)."""
    names = [n for n in CANDIDATES if n in val_scores]
    best, aps = maturity.choose([val_scores[n] for n in names], y_known, w_known)
    return names[best], {n: round(a, 5) for n, a in zip(names, aps, strict=True)}


@dataclass
class HeadChoice:
    """Every candidate head's validation and test scores (raw and calibrated), the chosen one and why."""

    chosen: str  # among SERVABLE: what `fraudmesh train --served-head auto` serves
    chosen_all: str  # among every candidate (refit and blend are not exportable yet)
    val_known_pr_auc: dict[str, float]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    test_calibrated: dict[str, np.ndarray]
    calibration: dict[str, Calibrator]
    refit: TwoBlockHead | None
    refit_info: dict

    def to_json(self) -> dict:
        return {
            "criterion": SELECTION_CRITERION,
            "chosen": self.chosen,
            "servable": list(SERVABLE),
            "chosen_among_all": self.chosen_all,
            "val_known_pr_auc": self.val_known_pr_auc,
            "refit": self.refit_info,
        }


def fit_candidates(result) -> HeadChoice:  # type: ignore[no-untyped-def]
    """Fit `mlp_refit` and `blend` beside the trained `mlp` (GNN) and `gbm` (emb_gbm) heads of a training run,
    calibrate each on validation (labels known at its cut-off) and choose the served head on validation."""
    from trainer import calibration
    from trainer.train import standardisation

    prep = result.prep
    val, test = prep.part == 1, prep.part == 2
    cal = {
        name: Calibrator(np.asarray(c["calibration"]["score"]), np.asarray(c["calibration"]["probability"]))
        for name, c in result.choices.items()
    }
    x_all = result.head_x
    assert x_all is not None
    v: dict[str, np.ndarray] = {"mlp": result.val_scores["gnn"]}
    t: dict[str, np.ndarray] = {"mlp": result.test_scores["gnn"]}
    calib = {"mlp": cal["gnn"]}
    mean, std = standardisation(prep)
    refit, info = refit_head(
        RefitData(x_all, prep.part, prep.y_train, prep.w_train, prep.y_val_known, prep.w_val_known),
        prep.tx_x.shape[1],
        len(prep.tab_names),
        result.cfg.dim,
        mean,
        std,
        seed=result.cfg.seed,
        pos_weight=result.cfg.pos_weight,
    )
    with torch.no_grad():
        p_all = refit(x_all).numpy()
    v["mlp_refit"], t["mlp_refit"] = p_all[val], p_all[test]
    if "emb_gbm" in result.val_scores:
        v["gbm"], t["gbm"] = result.val_scores["emb_gbm"], result.test_scores["emb_gbm"]
        calib["gbm"] = cal["emb_gbm"]
        w_val = prep.weight[val]
        ranks = (traffic_rank(v["mlp"], w_val), traffic_rank(v["gbm"], w_val))
        v["blend"], t["blend"] = blend(v["mlp"], v["gbm"], *ranks), blend(t["mlp"], t["gbm"], *ranks)
    cdf_val = maturity.delay_cdf(prep.ledger.ts, prep.ledger.label_time, prep.ledger.is_fraud, prep.split.val_end)
    f_age = cdf_val(prep.split.val_end - prep.ledger.ts[prep.tab.rows[val]])
    for name in ("mlp_refit", "blend"):
        if name in v:
            calib[name] = calibration.fit(v[name], prep.y_val_known[val], f_age, prep.weight[val])
    # the served head is chosen among the exportable ones, as `--served-head auto` does (served_choice)
    chosen, _ = choose_head({n: v[n] for n in SERVABLE if n in v}, prep.y_val_known[val], prep.w_val_known[val])
    chosen_all, aps = choose_head(v, prep.y_val_known[val], prep.w_val_known[val])
    return HeadChoice(
        chosen=chosen,
        chosen_all=chosen_all,
        val_known_pr_auc=aps,
        val=v,
        test=t,
        test_calibrated={n: calib[n](t[n]).astype(np.float32) for n in t},
        calibration=calib,
        refit=refit,
        refit_info=info,
    )


def served_choice(result) -> dict:  # type: ignore[no-untyped-def]
    """`fraudmesh train --served-head auto`: the servable head with the best SELECTION_CRITERION on validation
    (the MLP when the run fitted no embeddings+GBM), with every candidate's value, for the artifact's metadata."""
    prep = result.prep
    val = prep.part == 1
    cands = {"mlp": result.val_scores["gnn"]}
    if result.emb_gbm is not None and "emb_gbm" in result.val_scores:
        cands["gbm"] = result.val_scores["emb_gbm"]
    chosen, aps = choose_head(cands, prep.y_val_known[val], prep.w_val_known[val])
    return {"mode": "auto", "criterion": SELECTION_CRITERION, "chosen": chosen, "val_known_pr_auc": aps}
