"""Export: the head as the served ONNX model, the encoder as ONNX (for torch-free embedding refreshes), the entity
embeddings as Parquet beside the model, the embeddings+GBM head as a second servable artifact over the same inputs
and embeddings, the baseline as its own ONNX artifact, and the registry metadata."""

from __future__ import annotations

import datetime as dt
import io
import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from feature_svc.definitions import FEATURE_SET_VERSION
from inference_svc.artifact import EmbeddingSpec, ModelMetadata, Thresholds, ValidationSpec, write_artifact
from inference_svc.validation import write_sample
from trainer.embed import embeddings_parquet
from trainer.gbm_onnx import GbmExportError, gbm_onnx
from trainer.gnn import NODE_TYPES, EncoderOnnx
from trainer.heads import served_choice
from trainer.snapshot import LINKS, NODE_FEATURES, snapshot
from trainer.train import TX_NAMES, Result, predict, snapshot_tensors

OPSET = 17
INPUT, OUTPUT = "input", "probabilities"
EMBEDDINGS_FILE = "embeddings.parquet"
ENCODER_FILE = "encoder.onnx"


def embedding_names(dim: int) -> list[str]:
    return [f"emb_{t}_{i}" for t in NODE_TYPES for i in range(dim)]


def head_onnx(result: Result) -> bytes:
    head = result.head.eval()
    n = head.n_tx + head.n_tab + 4 * head.dim
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head,
            (torch.zeros((2, n)),),
            buf,
            opset_version=OPSET,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    return buf.getvalue()


ENCODER_INPUTS = [*(f"x_{t}" for t in NODE_TYPES), *(f"edges_{link}" for link in LINKS)]
ENCODER_OUTPUTS = [f"emb_{t}" for t in NODE_TYPES]


def encoder_onnx(result: Result) -> bytes:
    snap = result.prep.snapshots[-1]
    x, e = snapshot_tensors(snap)
    args = (*(x[t] for t in NODE_TYPES), *(e[link] for link in LINKS))
    axes = {f"x_{t}": {0: f"n_{t}"} for t in NODE_TYPES}
    axes.update({f"edges_{link}": {1: f"e_{link}"} for link in LINKS})
    axes.update({f"emb_{t}": {0: f"n_{t}"} for t in NODE_TYPES})
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            EncoderOnnx(result.encoder.eval()),
            args,
            buf,
            opset_version=OPSET,
            dynamo=False,
            input_names=ENCODER_INPUTS,
            output_names=ENCODER_OUTPUTS,
            dynamic_axes=axes,
        )
    return buf.getvalue()


@torch.no_grad()
def embeddings_table(result: Result, as_of: int | None = None) -> tuple[pa.Table, dict[str, list[float]]]:
    """Embeddings of every entity seen before `as_of` (default: the end of the data), one row per entity, plus
    one row per type with entity_id '' holding the default embedding for entities without a row."""
    prep = result.prep
    as_of = prep.split.end if as_of is None else as_of
    snap = snapshot(prep.ledger, prep.edges, as_of)
    emb = {t: v.numpy() for t, v in result.encoder.eval()(*snapshot_tensors(snap)).items()}
    defaults = {t: [float(v) for v in emb[t][-1]] for t in NODE_TYPES}
    return embeddings_parquet(prep.ledger, snap, emb), defaults


def baseline_onnx(result: Result) -> bytes | None:
    """The baseline's trees as ONNX (trainer.gbm_onnx: skl2onnx cannot convert this HistGradientBoosting)."""
    try:
        return gbm_onnx(result.baseline, len(TX_NAMES) + len(result.prep.tab_names))
    except GbmExportError as exc:  # the baseline artifact is a convenience; the report does not depend on it
        warnings.warn(f"baseline not exported to ONNX ({exc}); pickled only", stacklevel=1)
        return None


VALIDATION_ROWS = 5000


def validation_rows(result: Result, rows: int = VALIDATION_ROWS) -> np.ndarray:
    """A mask of up to `rows` test rows: every fraud row if they fit in half, legit rows sampled."""
    prep = result.prep
    test = np.flatnonzero(prep.part == 2)
    y_all = prep.y_true[test].astype(bool)
    rng = np.random.default_rng(result.cfg.seed)
    pos, neg = test[y_all], test[~y_all]
    pos = pos if len(pos) <= rows // 2 else rng.choice(pos, rows // 2, replace=False)
    neg = neg if len(neg) <= rows - len(pos) else rng.choice(neg, rows - len(pos), replace=False)
    mask = np.zeros(len(prep.part), dtype=bool)
    mask[np.concatenate([pos, neg])] = True
    return mask


def validation_sample(
    result: Result, base: Path, names: list[str], rows: int = VALIDATION_ROWS, head: str = "mlp"
) -> ValidationSpec:
    """Up to `rows` test rows (every fraud row among them if they fit in half), with their head inputs, eventual
    labels and the trainer's own scores (torch for the MLP head, scikit-learn for the GBM head, on the same float32
    inputs serving sees), written beside the model for `POST /validate`."""
    prep = result.prep
    mask = validation_rows(result, rows)
    scores, x = predict(result.encoder, result.head, prep, mask)
    if head == "gbm":
        scores = result.emb_gbm.predict_proba(x.numpy().astype(np.float64))[:, 1]  # type: ignore[attr-defined]
    return write_sample(
        base,
        names,
        x.numpy(),
        prep.y_true[mask].astype(bool),
        scores,
        f"{int(mask.sum())} rows of the test period (eventual labels; fraud rows kept, legit rows sampled)",
    )


def _summary(metrics: dict, models: tuple[str, ...] = ("gnn", "baseline")) -> dict:
    out = {}
    for part in ("validation_known", "test"):
        for model in models:
            for kind, m in metrics[part].get(model, {}).items():
                out[f"{part}.{model}.{kind}.pr_auc"] = m["pr_auc"]
    return out


HEADS = ("auto", "mlp", "gbm")
"""The heads over the GNN embeddings that can be served: the MLP trained with the encoder, or gradient boosting
fitted on the same inputs ([fields | registry | embeddings], `emb_gbm`); `auto`: the one with the better
validation score at label maturity (trainer.heads.served_choice)."""


def export(
    result: Result,
    model_dir: Path,
    *,
    activate: bool = True,
    world_params: dict | None = None,
    served_head: str = "mlp",
) -> dict:
    """Write `<model_dir>/gnn-<ts>/` (model.onnx = MLP head, encoder.onnx, embeddings.parquet, metadata.json,
    eval/), `<model_dir>/embgbm-<ts>/` (model.onnx = gradient boosting over the same inputs, with the same encoder
    and embeddings) and `<model_dir>/hgb-<ts>/` (baseline, never activated). `served_head` says which of the first
    two is activated (`mlp`: the GNN, `gbm`: embeddings+GBM, `auto`: the better on validation, trainer.heads);
    the choice and why is in both artifacts' metadata (training.head_selection). Returns what was written."""
    if served_head not in HEADS:
        raise ValueError(f"served head {served_head!r} is not one of {', '.join(HEADS)}")
    if served_head == "gbm" and result.emb_gbm is None:
        raise ValueError(
            "served head 'gbm' needs the embeddings+GBM model, which this run did not fit "
            "(TrainConfig.emb_gbm and use_embeddings must be on)"
        )
    if served_head == "auto":
        selection = served_choice(result)
        served_head = selection["chosen"]
    else:
        selection = {"mode": "forced", "chosen": served_head}
    prep, cfg = result.prep, result.cfg
    stamp = dt.datetime.now(dt.UTC)
    version = f"gnn-{stamp:%Y%m%d-%H%M%S}"
    table, defaults = embeddings_table(result)
    dim = cfg.dim
    training = {
        "source": prep.tab.source,
        "world": world_params or {},
        "data_hash": prep.ledger.data_hash,
        "feature_set_version": FEATURE_SET_VERSION,
        "split": prep.split.to_json(),
        "label_rule": (
            "train labels: label_time < train_end, unlabelled rows weighted by maturity F(age); choices on "
            "validation: label_time < val_end (maturity-weighted); test: eventual labels"
        ),
        "label_delay": prep.delay,
        "choices": result.choices,
        "head_selection": selection,
        "train_fraud": {
            "known_at_cutoff": int(prep.y_train[prep.part == 0].sum()),
            "eventual": int(prep.y_true[prep.part == 0].sum()),
        },
        "rows": {
            "train": int((prep.part == 0).sum()),
            "validation": int((prep.part == 1).sum()),
            "test": int((prep.part == 2).sum()),
        },
        "config": result.config_json(),
        "gnn": {"best_epoch": result.gnn_info["best"]["epoch"], "epochs_run": result.gnn_info["epochs_run"]},
        "seconds": result.seconds,
        "peak_rss_mib": result.peak_rss_mib,
        "inputs": {
            "tx_fields": TX_NAMES,
            "registry_features": prep.tab_names,
            "embeddings": {"types": list(NODE_TYPES), "dim": dim},
        },
        "embeddings": {
            "file": EMBEDDINGS_FILE,
            "as_of": prep.split.to_json()["end"],
            "dim": dim,
            "default": defaults,
            "encoder": ENCODER_FILE,
            "encoder_inputs": ENCODER_INPUTS,
            "encoder_outputs": ENCODER_OUTPUTS,
            "node_features": {t: list(v) for t, v in NODE_FEATURES.items()},
            "refresh": "daily: python -m trainer.embed (numpy + onnxruntime, no torch)",
        },
    }
    meta = ModelMetadata(
        version=version,
        kind="hetero_graphsage",
        feature_names=[*TX_NAMES, *prep.tab_names, *embedding_names(dim)],
        thresholds=Thresholds(**result.thresholds),
        explainer=None,
        created_at=stamp.isoformat(),
        training=training,
        metrics={**_summary(result.metrics), "detail": result.metrics},
        input_name=INPUT,
        output_name=OUTPUT,
        embeddings=EmbeddingSpec(
            file=EMBEDDINGS_FILE,
            dim=dim,
            types=list(NODE_TYPES),
            as_of=prep.split.to_json()["end"],
            default=defaults,
            encoder=ENCODER_FILE,
        ),
    )
    base = model_dir / version
    base.mkdir(parents=True, exist_ok=True)
    meta.validation = validation_sample(result, base, meta.feature_names)
    # the files the model needs first, the metadata (and the active marker) last: a watching worker never loads
    # a version whose embeddings are not there yet
    (base / ENCODER_FILE).write_bytes(encoder_onnx(result))
    pq.write_table(table, base / EMBEDDINGS_FILE, compression="zstd")
    base = write_artifact(model_dir, meta, head_onnx(result), activate=activate and served_head == "mlp")
    eval_dir = base / "eval"
    eval_dir.mkdir(exist_ok=True)
    np.savez_compressed(eval_dir / "test_scores.npz", **result.test_scores)
    (eval_dir / "history.json").write_text(json.dumps(result.gnn_info, indent=1) + "\n")
    (eval_dir / "choices.json").write_text(json.dumps(result.choices, indent=1) + "\n")
    written = {"gnn": str(base), "version": version, "served": version, "head_selection": selection}
    if result.emb_gbm is not None:
        g = gbm_artifact(result, model_dir, meta, stamp, activate=activate and served_head == "gbm")
        if g is not None:
            written["emb_gbm"], written["emb_gbm_version"] = str(g), g.name
            if served_head == "gbm":
                written["served"] = g.name
    # the baseline: always pickled beside the GNN (sklearn, for evaluation and comparison), and as its own ONNX
    # artifact (never activated; trainer.gbm_onnx builds it from the trees)
    with (base / "baseline.pkl").open("wb") as fh:
        pickle.dump({"model": result.baseline, "feature_names": [*TX_NAMES, *prep.tab_names]}, fh)
    written["baseline_pickle"] = str(base / "baseline.pkl")
    b = baseline_onnx(result)
    if b is not None:
        b_meta = ModelMetadata(
            version=f"hgb-{stamp:%Y%m%d-%H%M%S}",
            kind="hist_gradient_boosting",
            feature_names=[*TX_NAMES, *prep.tab_names],
            thresholds=Thresholds(**result.baseline_thresholds),
            created_at=stamp.isoformat(),
            training={k: training[k] for k in ("source", "world", "data_hash", "feature_set_version", "split")},
            metrics={k: v for k, v in _summary(result.metrics).items() if ".baseline." in k},
            input_name=INPUT,
            output_name=OUTPUT,
        )
        written["baseline"] = str(write_artifact(model_dir, b_meta, b, activate=False))
        written["baseline_version"] = b_meta.version
    return written


def gbm_artifact(
    result: Result, model_dir: Path, gnn_meta: ModelMetadata, stamp: dt.datetime, *, activate: bool
) -> Path | None:
    """`<model_dir>/embgbm-<ts>/`: the embeddings+GBM head as ONNX over the GNN head's inputs, with a copy of the
    GNN's encoder and embeddings table (so the worker builds the same emb_* columns, and a refresh works on it
    alone). None, with a warning, when the trees cannot be exported and the head is not the one to serve."""
    clf = result.emb_gbm
    try:
        onnx_bytes = gbm_onnx(clf, len(gnn_meta.feature_names))
    except GbmExportError as exc:
        if activate:
            raise
        warnings.warn(f"embeddings+GBM not exported: {exc}", stacklevel=1)
        return None
    version = f"embgbm-{stamp:%Y%m%d-%H%M%S}"
    training = {
        **gnn_meta.training,
        "head": "gbm",
        "gbm": {"grid": getattr(clf, "grid_", []), "encoder_version": gnn_meta.version},
    }
    meta = ModelMetadata(
        version=version,
        kind="gnn_embeddings_gbm",
        feature_names=list(gnn_meta.feature_names),
        thresholds=Thresholds(**result.choices["emb_gbm"]["thresholds"]),
        created_at=stamp.isoformat(),
        training=training,
        metrics={
            **_summary(result.metrics, ("emb_gbm", "gnn", "baseline")),
            "detail": result.metrics,
        },
        input_name=INPUT,
        output_name=OUTPUT,
        embeddings=gnn_meta.embeddings,
    )
    base = model_dir / version
    base.mkdir(parents=True, exist_ok=True)
    src = model_dir / gnn_meta.version
    for name in (ENCODER_FILE, EMBEDDINGS_FILE):
        shutil.copyfile(src / name, base / name)
    meta.validation = validation_sample(result, base, meta.feature_names, head="gbm")
    with (base / "gbm.pkl").open("wb") as fh:  # the scikit-learn model itself, for evaluation and comparison
        pickle.dump({"model": clf, "feature_names": meta.feature_names}, fh)
    return write_artifact(model_dir, meta, onnx_bytes, activate=activate)
