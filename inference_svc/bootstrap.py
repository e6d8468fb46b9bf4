"""The bootstrap model: a logistic regression over the transaction's own fields, exported to ONNX.

It exists so that a fresh checkout scores end to end before any world is simulated or GNN trained. It is
trained on a small seeded synthetic sample whose fraud odds follow plain domain rules (card-testing amounts,
high-risk categories, cross-border, card-not-present, night). The GNN of the model issue replaces it; the
artifact layout and the serving code stay the same. Needs scikit-learn and skl2onnx, never torch.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import numpy as np

from inference_svc.artifact import LinearExplainer, ModelMetadata, Thresholds, write_artifact
from inference_svc.tx_features import FEATURE_NAMES, HIGH_RISK_MCC, featurize
from inference_svc.validation import write_sample
from shared.messages import Channel, Transaction

MCCS = ["5411", "5812", "5541", "5311", "5999", "4111", "5912", "7011", *sorted(HIGH_RISK_MCC)]
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "BR", "IN", "NG", "JP", "MX"]
CURRENCY_OF = {
    "US": "USD",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "CA": "CAD",
    "BR": "BRL",
    "IN": "INR",
    "NG": "USD",
    "JP": "JPY",
    "MX": "MXN",
}
CHANNELS: list[Channel] = ["pos", "ecom", "atm", "moto", "p2p"]


def synthetic_sample(n: int, seed: int) -> tuple[list[Transaction], np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = np.round(np.exp(rng.normal(3.6, 1.2, n)), 2)
    tiny = rng.random(n) < 0.04
    amount[tiny] = np.round(rng.uniform(0.5, 4.9, tiny.sum()), 2)
    mcc = rng.choice(MCCS, n, p=_probs(len(MCCS), heavy=8))
    country = rng.choice(COUNTRIES, n, p=_probs(len(COUNTRIES), heavy=1))
    home_currency = np.array([CURRENCY_OF[c] for c in country])
    travel = rng.random(n) < 0.08
    currency = np.where(travel, rng.choice(["USD", "EUR", "GBP"], n), home_currency)
    channel = rng.choice(CHANNELS, n, p=[0.55, 0.3, 0.08, 0.04, 0.03])
    start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    seconds = rng.integers(0, 42 * 86400, n)
    has_device = rng.random(n) < 0.85
    txs = [
        Transaction(
            card_id=f"card_{rng.integers(0, 5000):06d}",
            transaction_amount=float(amount[i]),
            merchant_id=f"m_{rng.integers(0, 800):05d}",
            mcc_code=str(mcc[i]),
            country_code=str(country[i]),
            currency=str(currency[i]),
            channel=cast(Channel, str(channel[i])),
            timestamp=start + dt.timedelta(seconds=int(seconds[i])),
            device_id=f"dev_{i:07d}" if has_device[i] else None,
            ip_address=f"10.{i % 250}.{(i // 250) % 250}.{i % 7}",
            transaction_id=f"boot-{i}",
        )
        for i in range(n)
    ]
    x = featurize(txs)
    col = {name: x[:, j] for j, name in enumerate(FEATURE_NAMES)}
    logit = (
        -5.0
        + 2.4 * col["amount_tiny"] * col["channel_ecom"]
        + 1.2 * col["amount_high"]
        + 1.7 * col["mcc_high_risk"]
        + 1.3 * col["cross_border"]
        + 0.8 * col["channel_ecom"]
        + 0.9 * col["channel_remote_other"]
        + 0.7 * col["night_utc"]
        + 0.9 * col["device_missing"]
    )
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return txs, y.astype(np.int64)


def _probs(k: int, heavy: int) -> np.ndarray:
    w = np.ones(k)
    w[:heavy] = 6.0
    probs: np.ndarray = w / w.sum()
    return probs


def train_bootstrap(model_dir: Path, n: int = 40_000, seed: int = 7, activate: bool = True) -> ModelMetadata:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    txs, y = synthetic_sample(n, seed)
    x = featurize(txs)
    split = int(n * 0.8)
    clf = LogisticRegression(max_iter=500, C=1.0)
    clf.fit(x[:split], y[:split])
    p_val = clf.predict_proba(x[split:])[:, 1]
    # thresholds from validation scores: top 10% review, top 3% high, top 1% decline
    medium, high, critical = (float(np.quantile(p_val, q)) for q in (0.90, 0.97, 0.99))
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    version = f"bootstrap-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    meta = ModelMetadata(
        version=version,
        kind="logistic_regression",
        feature_names=list(FEATURE_NAMES),
        thresholds=Thresholds(medium=medium, high=high, critical=critical),
        explainer=LinearExplainer(coef=[float(c) for c in clf.coef_[0]], mean=[float(m) for m in x[:split].mean(0)]),
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        training={
            "source": "bootstrap synthetic sample",
            "rows": n,
            "seed": seed,
            "fraud_rate": float(y.mean()),
        },
        metrics={
            "val_roc_auc": round(float(roc_auc_score(y[split:], p_val)), 4),
            "val_pr_auc": round(float(average_precision_score(y[split:], p_val)), 4),
        },
        input_name=onx.graph.input[0].name,
        output_name="probabilities",
    )
    base = model_dir / version
    base.mkdir(parents=True, exist_ok=True)
    # the validation split ships with the model: `POST /validate` scores it with onnxruntime and compares
    meta.validation = write_sample(
        base, meta.feature_names, x[split:], y[split:], p_val, "bootstrap validation split (last 20% of the sample)"
    )
    write_artifact(model_dir, meta, onx.SerializeToString(), activate=activate)
    return meta
