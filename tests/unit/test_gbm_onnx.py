"""The hand-built ONNX of a HistGradientBoostingClassifier (trainer/gbm_onnx.py) against scikit-learn itself, on
data with missing values (including a column that had none in training), and its refusal of what it cannot
translate."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402

from trainer.gbm_onnx import GbmExportError, gbm_onnx  # noqa: E402


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    x[rng.random(rows) < 0.2, 1] = np.nan
    x[rng.random(rows) < 0.1, 3] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.5 * x[:, 2] + np.isnan(x[:, 1]) + rng.normal(size=rows) > 1.0).astype(int)
    return x, y


def test_onnx_probabilities_equal_predict_proba_with_missing_values() -> None:
    x, y = _data(4000, 0)
    clf = HistGradientBoostingClassifier(max_iter=80, random_state=0).fit(x, y, sample_weight=1 + y * 4.0)
    sess = ort.InferenceSession(gbm_onnx(clf, 6), providers=["CPUExecutionProvider"])
    test, _ = _data(2000, 1)
    test[:50, 4] = np.nan  # never missing in training: scikit-learn sends it to the larger child
    test[50:60] = np.nan
    x32 = test.astype(np.float32)
    p = sess.run(["probabilities"], {"input": x32})[0]
    ref = clf.predict_proba(x32.astype(np.float64))[:, 1]
    assert p.shape == (len(test),) and p.dtype == np.float32
    assert np.max(np.abs(p - ref)) < 1e-6
    assert np.std(ref) > 0.05


def test_categorical_splits_and_wrong_widths_are_refused_with_a_reason() -> None:
    x, y = _data(1000, 2)
    x[:, 5] = np.floor(np.abs(x[:, 5]) * 3) % 4
    cat = HistGradientBoostingClassifier(max_iter=5, categorical_features=[5]).fit(x, y)
    with pytest.raises(GbmExportError, match="categorical"):
        gbm_onnx(cat, 6)
    num = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    with pytest.raises(GbmExportError, match="fitted on 6 columns"):
        gbm_onnx(num, 7)
    with pytest.raises(GbmExportError, match="binary"):
        gbm_onnx(HistGradientBoostingClassifier(max_iter=5).fit(x, np.arange(len(y)) % 3), 6)
