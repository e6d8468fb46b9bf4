"""The evaluation uses only what was known when each choice was made, and its intervals resample incidents.

- `choose` (early stopping, the gradient-boosting grid) sees the labels known at the validation cut-off: a case
  where a label arriving later would change the choice, and the choice does not change;
- end to end on a tiny world: hiding every label that arrives after the validation cut-off (turning those frauds
  into legit rows) changes nothing that was chosen on validation: the GNN's epoch, the grid point, the
  thresholds, the calibration;
- the label-delay estimate recovers a known distribution from right-truncated labels;
- bootstrap replicates move whole incidents.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trainer import bootstrap, maturity
from trainer.data import US_PER_DAY

DAY = US_PER_DAY


def test_choose_uses_labels_known_at_the_cutoff_only() -> None:
    """Ten frauds: four labelled before the cut-off, six after. Candidate A ranks the four early ones on top;
    candidate B ranks the six late ones on top. With eventual labels B wins, with the known ones A does, and
    `choose` on the known target picks A."""
    n_legit = 200
    cutoff = 30 * DAY
    ts = np.full(n_legit + 10, 25 * DAY)
    is_fraud = np.r_[np.zeros(n_legit, bool), np.ones(10, bool)]
    label_time = np.full(len(ts), np.iinfo(np.int64).max)
    label_time[n_legit : n_legit + 4] = 27 * DAY  # known at the cut-off
    label_time[n_legit + 4 :] = 40 * DAY  # arrive later
    rng = np.random.default_rng(0)
    legit_scores = rng.uniform(0.0, 0.5, n_legit)
    a = np.r_[legit_scores, [0.99, 0.98, 0.97, 0.96], [0.3, 0.2, 0.1, 0.25, 0.15, 0.05]]
    b = np.r_[legit_scores, [0.4, 0.3, 0.2, 0.1], [0.99, 0.98, 0.97, 0.96, 0.95, 0.94]]
    cdf = maturity.DelayCdf(cdf=np.ones(200))
    y_known, w_known = maturity.known_target(ts, label_time, is_fraud, cutoff, cdf, np.ones(len(ts)))
    assert y_known.sum() == 4
    eventual_best, _ = maturity.choose([a, b], is_fraud, np.ones(len(ts)))
    assert eventual_best == 1, "the case must be one where later labels would change the choice"
    best, aps = maturity.choose([a, b], y_known, w_known)
    assert best == 0 and aps[0] > aps[1]


def test_maturity_weights_trust_old_unlabelled_rows_more() -> None:
    cdf = maturity.DelayCdf(cdf=np.linspace(0.0, 1.0, 120))  # F reaches 1 at 30 days
    ts = np.array([29.9 * DAY, 20 * DAY, 1 * DAY, 10 * DAY]).astype(np.int64)
    label_time = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).max, np.iinfo(np.int64).max, 12 * DAY])
    y, w = maturity.maturity_weights(ts, label_time, np.array([False, False, False, True]), 30 * DAY, cdf)
    assert y.tolist() == [False, False, False, True]
    assert w[3] == 1.0 and w[0] < w[1] < w[2] <= 1.0
    assert w[0] == pytest.approx(0.02)  # a row a few hours old: the floor


def test_delay_cdf_recovers_a_truncated_uniform_delay() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    ts = rng.integers(0, 28 * DAY, n)
    delay = (2 + 28 * rng.random(n)) * DAY
    cdf = maturity.delay_cdf(ts, (ts + delay).astype(np.int64), np.ones(n, bool), 28 * DAY)
    for days in (7, 14, 21):
        # the labels known at the cut-off can only show delays up to 28 days: F is conditional on that
        assert cdf(np.array([days * DAY]))[0] == pytest.approx((days - 2) / 26, abs=0.03)


def test_bootstrap_resamples_whole_incidents() -> None:
    y = np.array([True, True, True, True, False, False, False])
    incident = np.array(["ring-1", "ring-1", "ring-2", "ring-2", "", "", ""])
    reps = bootstrap.replicate_weights(incident, y, np.ones(len(y)), 50, seed=3)
    assert np.array_equal(reps[0], np.ones(len(y)))
    for w in reps[1:]:
        assert w[0] == w[1] and w[2] == w[3]
        assert w[0] + w[2] == 2  # two incidents drawn, with replacement
    assert any(w[0] == 2 for w in reps[1:]) and any(w[0] == 0 for w in reps[1:])


torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")


def _hide_late_labels(world, cutoff_us: int):  # type: ignore[no-untyped-def]
    """The world with every fraud whose label arrives at or after `cutoff_us` turned into a legit row."""
    tx = world.transactions
    lt = pc.fill_null(tx["label_time"].cast(pa.int64()), 0)
    late = pc.and_(tx["is_fraud"], pc.greater_equal(lt, cutoff_us))
    assert pc.sum(late).as_py() > 0
    keep_fraud = pc.and_(tx["is_fraud"], pc.invert(late))
    tx = tx.set_column(tx.schema.get_field_index("is_fraud"), "is_fraud", keep_fraud)
    tx = tx.set_column(
        tx.schema.get_field_index("label_time"),
        "label_time",
        pc.if_else(keep_fraud, tx["label_time"], pa.scalar(None, tx["label_time"].type)),
    )
    tx = tx.set_column(
        tx.schema.get_field_index("fraud_kind"), "fraud_kind", pc.if_else(keep_fraud, tx["fraud_kind"], "")
    )
    return replace(world, transactions=tx)


def test_choices_on_validation_ignore_labels_from_after_its_cutoff() -> None:
    from feature_svc.world import WorldParams, generate_world
    from trainer.train import TrainConfig, run

    world = generate_world(
        WorldParams(
            n_cards=400,
            n_transactions=6_000,
            days=21,
            seed=3,
            ring_share=0.02,
            card_testing_share=0.01,
            label_delay_days=(1.0, 8.0),  # some validation labels arrive before its cut-off, some after
        ),
        progress=False,
    )
    cfg = TrainConfig(epochs=3, patience=3, val_days=5, test_days=5, progress=False, baseline_iter=30, threads=1)
    a = run(world, None, cfg)
    hidden = _hide_late_labels(world, a.prep.split.val_end)
    b = run(hidden, None, cfg)
    assert int(a.prep.y_true.sum()) > int(b.prep.y_true.sum()), "labels after the cut-off were hidden"
    val = a.prep.part == 1
    assert a.prep.y_val_known[val].sum() > 0, "validation must have labels known at its cut-off to choose with"
    assert (a.prep.y_true[val] & ~b.prep.y_true[val]).any(), "and later ones that would have changed the choice"
    assert a.gnn_info["best"] == b.gnn_info["best"]
    assert a.gnn_info["history"] == b.gnn_info["history"]
    assert a.baseline.grid_ == b.baseline.grid_  # type: ignore[attr-defined]
    assert a.choices == b.choices  # thresholds and calibration of every model
    # the served head (fraudmesh train --served-head auto) and the study's head candidates are chosen the same way
    from trainer.heads import fit_candidates, served_choice

    assert served_choice(a) == served_choice(b)
    ha, hb = fit_candidates(a), fit_candidates(b)
    assert ha.refit_info == hb.refit_info  # the refit head's early stopping too
    assert (ha.chosen, ha.val_known_pr_auc) == (hb.chosen, hb.val_known_pr_auc)


def test_study_and_its_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two training seeds on a tiny world, then `fraudmesh evaluate --study`: the first screen states whether the
    GNN target is met, every model has a per-kind row with intervals, calibration and realised flag rates."""
    import json

    from trainer.evaluate import evaluate_main
    from trainer.study import main as study_main

    tiny = ["--transactions", "6000", "--cards", "400", "--ring-share", "0.02", "--label-delay-days", "1", "8"]
    assert study_main(["--worlds", "3", "--train-seeds", "0", "1", "--epochs", "2", "--baseline-iter", "20", *tiny,
                       "--out", str(tmp_path / "study"), "--days", "21"]) == 0  # fmt: skip
    assert (
        evaluate_main(["--study", str(tmp_path / "study"), "--out", str(tmp_path / "report"), "--bootstrap", "30"]) == 0
    )
    readme = (tmp_path / "report" / "README.md").read_text()
    first_screen = readme.split("## Per world")[0]
    assert (
        "Target" in first_screen and ("MET" in first_screen) and "Best single registry column on rings" in first_screen
    )
    for label in ("GNN (served head)", "GNN (MLP head)", "head-only", "GBM (censoring-aware)", "embeddings+GBM"):
        assert f"{label} PR-AUC" in readme
    # which head each training seed served, chosen on validation, and every candidate's test PR-AUC
    heads = readme.split("## The served head: chosen on validation")[1].split("\n## ")[0]
    assert "| 0 | " in heads and "| 1 | " in heads and "refit MLP head" in heads and "blend (MLP, GBM)" in heads
    assert "| ring (" in readme and "Brier" in readme and "target 1.0%" in readme
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 1000
    study = json.loads((tmp_path / "report" / "study.json").read_text())
    ring = study["world-3"]["slices"]["ring"]["models"]["gnn"]["pr_auc"]
    assert ring["lo"] <= ring["value"] <= ring["hi"]
    assert evaluate_main(["--study", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
