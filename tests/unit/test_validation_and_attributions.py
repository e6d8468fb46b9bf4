"""The serving side's own metrics (no scikit-learn there) agree with scikit-learn's, and the occlusion explainer's
attributions and baseline are what it defines, on a model whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from inference_svc.reasons import OcclusionExplainer
from inference_svc.validation import average_precision, roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_and_average_precision_match_scikit_learn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.05
    s = rng.random(3000) + 0.3 * y
    if ties:
        s = np.round(s, 1)  # many tied scores, across classes
    assert roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-12)


def test_metrics_without_both_classes_are_nan() -> None:
    assert np.isnan(roc_auc(np.zeros(5, bool), np.arange(5.0)))
    assert np.isnan(average_precision(np.zeros(5, bool), np.arange(5.0)))


def test_occlusion_attributions_of_an_additive_model_are_its_terms() -> None:
    """logit = b + sum w_i x_i, an unknown (NaN) input counting 0: occluding input i removes exactly w_i x_i, and the
    baseline (everything unknown) is sigmoid(b)."""
    b, w = -2.0, np.array([0.5, -1.0, 2.0])
    names = ["amount_log", "night_utc", "channel_ecom"]

    def predict(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = 1.0 / (1.0 + np.exp(-(b + np.nan_to_num(x.astype(np.float64)) @ w)))
        return out

    explainer = OcclusionExplainer(names, predict, {n: n for n in names})
    x = np.array([[1.0, 1.0, 0.5], [2.0, 0.0, 1.0]], dtype=np.float32)
    p = predict(x)
    assert explainer.codes == names
    assert np.allclose(explainer.deltas(x, p), x * w, atol=1e-6)
    assert np.allclose(explainer.baseline(x), 1.0 / (1.0 + np.exp(-b)))


def test_a_reason_never_prints_nan_for_an_input_the_model_does_not_read() -> None:
    """A model trained without the merchant's fraud rate (the numpy feature subset) still gets a merchant-risk
    reason from its other merchant inputs: the rate it never reads is "?", not "nan%"."""
    names = ["merchant_txn_count_1h"]

    def predict(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = 1.0 / (1.0 + np.exp(-(np.nan_to_num(x.astype(np.float64)) @ np.array([1.0]) - 3.0)))
        return out

    explainer = OcclusionExplainer(names, predict, {})
    x = np.array([[12.0]], dtype=np.float32)
    [factors] = explainer.explain(x, predict(x))
    assert [f.code for f in factors] == ["merchant_risk"]
    assert "nan" not in factors[0].description
    assert factors[0].description.startswith("merchant risk: ? known fraud in 30 days")
