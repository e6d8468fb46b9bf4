"""scikit-learn's HistGradientBoostingClassifier (binary, numerical splits) as ONNX that onnxruntime runs, built by
hand from the fitted trees (skl2onnx cannot convert this estimator in the scikit-learn versions we use).

The graph: `input` (float32, rows x features) -> Cast to double -> ai.onnx.ml TreeEnsembleRegressor (thresholds,
leaf values and the baseline as double tensors, NaN routed as each node learned) -> Sigmoid -> float32
`probabilities` (one per row). On float32 inputs it reproduces `predict_proba(x)[:, 1]` to rounding: the same
comparisons (`x <= threshold`, in double), the same sum (baseline + every tree's leaf), the same logistic link.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ML_OPSET = 3
INPUT, OUTPUT = "input", "probabilities"


class GbmExportError(ValueError):
    """The estimator uses something this exporter does not translate; the message says what and what to do."""


def _check(clf: Any) -> None:
    if not hasattr(clf, "_predictors"):
        raise GbmExportError(f"{type(clf).__name__} is not fitted (no trees): fit it before exporting")
    classes = list(getattr(clf, "classes_", []))
    if len(classes) != 2 or clf.n_trees_per_iteration_ != 1:
        raise GbmExportError(
            f"only binary classifiers are exported (this one has classes {classes}); train on 0/1 labels"
        )
    if getattr(clf, "_preprocessor", None) is not None or getattr(clf, "is_categorical_", None) is not None:
        raise GbmExportError(
            "the classifier has categorical features (categorical_features / from_dtype): their bitset splits "
            "are not exported; encode those columns as numbers before fitting"
        )
    for it, trees in enumerate(clf._predictors):
        for tree in trees:
            nodes = tree.nodes
            if bool(np.any(nodes["is_categorical"][nodes["is_leaf"] == 0])):
                raise GbmExportError(
                    f"tree {it} has a categorical split: not exported; encode that column as a number before fitting"
                )


def gbm_onnx(clf: Any, n_features: int) -> bytes:
    """The ONNX model (serialised) of a fitted binary HistGradientBoostingClassifier over `n_features` columns."""
    _check(clf)
    if int(clf.n_features_in_) != n_features:
        raise GbmExportError(f"the classifier was fitted on {clf.n_features_in_} columns, not {n_features}")
    tree_ids: list[int] = []
    node_ids: list[int] = []
    feature_ids: list[int] = []
    modes: list[str] = []
    thresholds: list[np.ndarray] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    missing_true: list[int] = []
    t_tree: list[int] = []
    t_node: list[int] = []
    t_weight: list[float] = []
    tree_no = 0
    for trees in clf._predictors:
        for tree in trees:
            nodes = tree.nodes
            n = len(nodes)
            leaf = nodes["is_leaf"].astype(bool)
            tree_ids += [tree_no] * n
            node_ids += list(range(n))
            feature_ids += [0 if lf else int(f) for lf, f in zip(leaf, nodes["feature_idx"], strict=True)]
            modes += ["LEAF" if lf else "BRANCH_LEQ" for lf in leaf]
            thresholds.append(np.where(leaf, 0.0, nodes["num_threshold"]))
            true_ids += [0 if lf else int(v) for lf, v in zip(leaf, nodes["left"], strict=True)]
            false_ids += [0 if lf else int(v) for lf, v in zip(leaf, nodes["right"], strict=True)]
            missing_true += [0 if lf else int(v) for lf, v in zip(leaf, nodes["missing_go_to_left"], strict=True)]
            for i in np.flatnonzero(leaf):
                t_tree.append(tree_no)
                t_node.append(int(i))
                t_weight.append(float(nodes["value"][i]))
            tree_no += 1
    if tree_no == 0:
        raise GbmExportError("the classifier has no trees (max_iter=0?): nothing to export")
    baseline = float(np.asarray(clf._baseline_prediction).reshape(-1)[0])
    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        ["x64"],
        ["raw"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=tree_ids,
        nodes_nodeids=node_ids,
        nodes_featureids=feature_ids,
        nodes_modes=modes,
        nodes_values_as_tensor=numpy_helper.from_array(np.concatenate(thresholds).astype(np.float64), "thresholds"),
        nodes_truenodeids=true_ids,
        nodes_falsenodeids=false_ids,
        nodes_missing_value_tracks_true=missing_true,
        nodes_hitrates=[1.0] * len(node_ids),
        target_ids=[0] * len(t_tree),
        target_treeids=t_tree,
        target_nodeids=t_node,
        target_weights_as_tensor=numpy_helper.from_array(np.asarray(t_weight, dtype=np.float64), "weights"),
        base_values_as_tensor=numpy_helper.from_array(np.asarray([baseline], dtype=np.float64), "base"),
    )
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [INPUT], ["x64"], to=TensorProto.DOUBLE),
            ensemble,
            helper.make_node("Sigmoid", ["raw"], ["p64"]),
            helper.make_node("Cast", ["p64"], ["p32"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["p32", "flat"], [OUTPUT]),
        ],
        "hist_gradient_boosting",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="fraudmesh.trainer.gbm_onnx",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
