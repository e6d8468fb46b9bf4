"""The training side on a tiny world: ONNX agrees with torch, the time split leaks nothing, the CLI writes the
artifact and the report, and the serving path never imports torch. Needs the `train` extra (skipped without)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from feature_svc.world import WorldParams, generate_world, write_world  # noqa: E402
from inference_svc.artifact import read_metadata  # noqa: E402
from trainer.train import TrainConfig, predict, run, snapshot_tensors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = WorldParams(n_cards=400, n_transactions=6_000, days=21, seed=3, ring_share=0.02, card_testing_share=0.01)
CFG = TrainConfig(epochs=2, patience=2, val_days=5, test_days=5, progress=False, baseline_iter=30)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return generate_world(TINY, progress=False)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):  # type: ignore[no-untyped-def]
    from trainer.export import export

    result = run(world, None, CFG)
    model_dir = tmp_path_factory.mktemp("models")
    written = export(result, model_dir, world_params=world.params.to_json())
    return result, model_dir, written


def test_onnx_head_agrees_with_torch_on_the_test_split(trained) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    result, _model_dir, written = trained
    test = result.prep.part == 2
    p_torch, x = predict(result.encoder, result.head, result.prep, test)
    assert len(p_torch) > 100
    meta = read_metadata(Path(written["gnn"]) / "metadata.json")
    assert x.shape[1] == len(meta.feature_names)
    sess = ort.InferenceSession(str(Path(written["gnn"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    p_onnx = sess.run([meta.output_name], {meta.input_name: x.numpy()})[0]
    assert p_onnx.shape == (len(p_torch),)
    assert np.max(np.abs(p_onnx - p_torch)) < 1e-4
    # NaN (an entity without features) is handled inside the graph, the same way in both
    x_nan = x[:5].clone()
    x_nan[:, 20] = float("nan")
    with torch.no_grad():
        ref = result.head(x_nan).numpy()
    out = sess.run([meta.output_name], {meta.input_name: x_nan.numpy()})[0]
    assert np.all(np.isfinite(out)) and np.max(np.abs(out - ref)) < 1e-4


def test_onnx_encoder_agrees_with_torch(trained) -> None:  # type: ignore[no-untyped-def]
    from trainer.embed import onnx_embeddings

    result, _model_dir, written = trained
    snap = result.prep.snapshots[-1]
    with torch.no_grad():
        ref = result.encoder(*snapshot_tensors(snap))
    got = onnx_embeddings(Path(written["gnn"]) / "encoder.onnx", snap)
    for t, v in got.items():
        assert v.shape == tuple(ref[t].shape)
        assert np.max(np.abs(v - ref[t].numpy())) < 1e-4, t


def test_time_split_has_no_leakage(trained) -> None:  # type: ignore[no-untyped-def]
    result, _, _ = trained
    prep = result.prep
    split, ledger = prep.split, prep.ledger
    ts = ledger.ts[prep.tab.rows]
    train = prep.part == 0
    assert ts[train].max() < split.train_end <= ts[prep.part == 1].min()
    assert ts[prep.part == 1].max() < split.val_end <= ts[prep.part == 2].min()
    # training labels: only chargebacks that arrived before the cut-off
    lt = ledger.label_time[prep.tab.rows]
    assert not np.any(prep.y_train & (lt >= split.train_end))
    assert np.any(prep.y_true[train] & ~prep.y_train[train]), "the tiny world should have late labels to hide"
    for d in np.unique(prep.day[train]):
        snap = prep.snapshots[d]
        rows_ts = ts[train & (prep.day == d)]
        assert snap.as_of <= rows_ts.min() and snap.as_of <= split.train_end
        for link in ("device", "ip", "merchant"):
            # every edge of the snapshot a training row sees was first seen before that row and before the cut
            first = {
                (c, o): f
                for c, o, f in zip(
                    prep.edges.card[link], prep.edges.other[link], prep.edges.first_seen[link], strict=True
                )
            }
            seen = [first[(c, o)] for c, o in snap.edges[link].T.tolist()]
            assert not seen or max(seen) < snap.as_of
        # the node features know only the labels that arrived before the snapshot
        known_cards = set(ledger.ent["card"][ledger.is_fraud & (ledger.label_time < snap.as_of)].tolist())
        assert set(np.flatnonzero(snap.x["card"][:, 5] > 0).tolist()) == known_cards


def test_artifact_metadata_and_embeddings(trained) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _result, model_dir, written = trained
    base = Path(written["gnn"])
    meta = read_metadata(base / "metadata.json")
    assert (model_dir / "active").read_text().strip() == meta.version
    assert meta.kind == "hetero_graphsage"
    t = meta.thresholds
    assert 0 <= t.medium < t.high < t.critical <= 1
    emb = meta.training["embeddings"]
    dim = emb["dim"]
    assert meta.feature_names[-4 * dim :] == [
        f"emb_{k}_{i}" for k in ("card", "merchant", "device", "ip") for i in range(dim)
    ]
    table = pq.read_table(base / "embeddings.parquet")
    defaults = table.filter(pc.equal(table["entity_id"], ""))
    assert sorted(defaults["entity_type"].to_pylist()) == ["card", "device", "ip", "merchant"]
    card_default = next(r for r in defaults.to_pylist() if r["entity_type"] == "card")["embedding"]
    assert np.allclose(card_default, emb["default"]["card"], atol=1e-6)
    assert meta.training["data_hash"].startswith("sha256:")
    assert "test.gnn.ring.pr_auc" in meta.metrics
    if "baseline" in written:
        b = read_metadata(Path(written["baseline"]) / "metadata.json")
        assert b.feature_names == meta.feature_names[: len(b.feature_names)]


def test_exported_gnn_ships_a_validation_sample_that_serving_reproduces(trained) -> None:  # type: ignore[no-untyped-def]
    from inference_svc.model import load_model
    from inference_svc.validation import validate

    _result, model_dir, written = trained
    model = load_model(model_dir, written["version"])
    spec = model.meta.validation
    assert spec is not None and spec.rows > 100 and spec.positives > 0
    assert (Path(written["gnn"]) / spec.file).is_file()
    report = validate(model.meta, Path(written["gnn"]), model.predict, 0.005)
    assert report.sample_available and report.rows == spec.rows
    assert report.agrees, report.message
    assert {c.name for c in report.checks} == {"roc_auc", "pr_auc"}


def test_train_and_evaluate_cli(world, tmp_path: Path, nats_url: str) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import nats

    from deploy.model_registry import RegistryAdmin
    from trainer.cli import train_main

    write_world(world, tmp_path / "world")
    rc = train_main(
        [
            "--world", str(tmp_path / "world"), "--local-features", "--epochs", "1", "--val-days", "5",
            "--test-days", "5", "--model-dir", str(tmp_path / "models"), "--report", str(tmp_path / "report"),
            "--no-progress", "--nats-url", nats_url,
        ]
    )  # fmt: skip
    assert rc == 0
    # the registry entry: in the local model dir and in the NATS Object Store
    version = (tmp_path / "models" / "active").read_text().strip()
    assert (tmp_path / "models" / version / "model.onnx").exists()

    async def published() -> list[str]:
        nc = await nats.connect(nats_url)
        try:
            return [m.version for m in await RegistryAdmin(nc.jetstream(), tmp_path / "models").published_versions()]
        finally:
            await nc.close()

    published_versions = asyncio.run(published())
    assert version in published_versions
    # both heads are exported (and published); the default (--served-head auto) activates the one chosen on
    # validation, as both artifacts' metadata records
    gnn = [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith("gnn-")]
    gbm = [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith("embgbm-")]
    assert len(gnn) == 1 and len(gbm) == 1 and {gnn[0], gbm[0]} <= set(published_versions)
    sel = read_metadata(tmp_path / "models" / gnn[0] / "metadata.json").training["head_selection"]
    assert sel["mode"] == "auto" and set(sel["val_known_pr_auc"]) == {"mlp", "gbm"}
    assert version == (gnn[0] if sel["chosen"] == "mlp" else gbm[0])
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| ring |" in readme and "ms" in readme
    assert (tmp_path / "report" / "pr_curves.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["onnx_partial"]["partial"] == 200
    assert train_main(["--world", str(tmp_path / "world"), "--offline", str(tmp_path / "nothing"), "--no-publish"]) == 2


def test_serving_path_never_imports_torch(trained) -> None:  # type: ignore[no-untyped-def]
    """A fresh interpreter imports the worker, loads the GNN artifact with onnxruntime, scores a 200-transaction
    partial through the Scorer (registry + embedding columns from a stand-in entity source, as Redis would
    provide them) and reads the embeddings Parquet: torch and torch_geometric are never imported."""
    _, model_dir, _ = trained
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        import numpy as np
        import pyarrow.parquet as pq
        import inference_svc.worker, inference_svc.model, inference_svc.scorer, feature_svc.online, trainer.embed
        from inference_svc.entity_features import EntityStats
        from inference_svc.model import load_model
        from inference_svc.scorer import Scorer
        from inference_svc.tx_features import FEATURE_NAMES
        from shared.messages import Transaction

        model_dir = Path({str(model_dir)!r})
        model = load_model(model_dir)
        table = pq.read_table(model_dir / model.version / "embeddings.parquet")

        class Entities:  # like EntityFeatureSource: registry columns, then the model's embedding block
            names = [n for n in model.meta.feature_names if n not in FEATURE_NAMES and not n.startswith("emb_")]
            async def build(self, txs, embeddings=None, **_):
                width = len(self.names) + (len(embeddings.spec.column_names()) if embeddings is not None else 0)
                x = np.zeros((len(txs), width), dtype=np.float32)
                return x, EntityStats(row_age_s=np.zeros(len(txs)), row_computed=np.zeros(len(txs), dtype=np.int64))

        txs = [Transaction(card_id=f"card_{{i}}", transaction_amount=10.0 + i) for i in range(200)]
        scores, p, _ = asyncio.run(Scorer(model, Entities()).score(txs))
        assert len(scores) == 200 and np.all((p >= 0) & (p <= 1)), p
        assert table.num_rows > 4
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_geometric"))
        print("TORCH_MODULES", bad)
        sys.exit(1 if bad else 0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TORCH_MODULES []" in proc.stdout


def test_gbm_head_onnx_equals_scikit_learn_on_the_test_split_with_missing_values(trained) -> None:  # type: ignore[no-untyped-def]
    """The embeddings+GBM head exported by hand to ONNX gives scikit-learn's predict_proba on the same (float32)
    inputs, to 1e-6, on every test row and on test rows with missing registry features or embeddings."""
    import onnxruntime as ort

    result, _model_dir, written = trained
    assert result.emb_gbm is not None and "emb_gbm" in written
    test = result.prep.part == 2
    _p, x_t = predict(result.encoder, result.head, result.prep, test)
    x = x_t.numpy()
    meta = read_metadata(Path(written["emb_gbm"]) / "metadata.json")
    gnn = read_metadata(Path(written["gnn"]) / "metadata.json")
    assert meta.feature_names == gnn.feature_names and meta.embeddings == gnn.embeddings
    assert x.shape[1] == len(meta.feature_names) == result.emb_gbm.n_features_in_
    # rows with missing values: some registry features, a whole block of embeddings, every column
    rng = np.random.default_rng(0)
    x_nan = x[rng.choice(len(x), 300, replace=False)].copy()
    n_raw = len(meta.feature_names) - 4 * meta.embeddings.dim  # type: ignore[union-attr]
    x_nan[:100, rng.choice(np.arange(13, n_raw), 10, replace=False)] = np.nan
    x_nan[100:200, n_raw : n_raw + meta.embeddings.dim] = np.nan  # type: ignore[union-attr]
    x_nan[200:] = np.where(rng.random((100, x.shape[1])) < 0.5, np.nan, x_nan[200:])
    x_all = np.vstack([x, x_nan]).astype(np.float32)
    assert np.isnan(x_all).any(axis=1).sum() >= 300
    sess = ort.InferenceSession(str(Path(written["emb_gbm"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    p_onnx = sess.run([meta.output_name], {meta.input_name: x_all})[0]
    p_skl = result.emb_gbm.predict_proba(x_all.astype(np.float64))[:, 1]
    assert p_onnx.shape == (len(x_all),)
    assert np.max(np.abs(p_onnx - p_skl)) < 1e-6
    # the model does not answer a constant: the missing rows move scores, so the comparison means something
    assert np.std(p_skl) > 1e-3
    assert "test.emb_gbm.ring.pr_auc" in meta.metrics


def test_gbm_head_ships_a_validation_sample_that_serving_reproduces(trained) -> None:  # type: ignore[no-untyped-def]
    from inference_svc.model import load_model
    from inference_svc.validation import validate

    _result, model_dir, written = trained
    model = load_model(model_dir, written["emb_gbm_version"])
    assert model.embeddings is not None  # the same embeddings table the GNN's worker looks up
    assert (model_dir / "active").read_text().strip() == written["version"]  # the default head stays the MLP
    report = validate(model.meta, Path(written["emb_gbm"]), model.predict, 0.005)
    assert report.sample_available and report.agrees, report.message


def test_served_head_auto_activates_the_better_head_on_validation(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`--served-head auto`: the head with the better validation PR-AUC at label maturity is the active version,
    and both artifacts record the choice, the criterion and every candidate's value."""
    from inference_svc.artifact import active_version
    from trainer import maturity
    from trainer.export import export

    result, _model_dir, _written = trained
    written = export(result, tmp_path, world_params={}, served_head="auto")
    sel = written["head_selection"]
    val = result.prep.part == 1
    _, (ap_mlp, ap_gbm) = maturity.choose(
        [result.val_scores["gnn"], result.val_scores["emb_gbm"]],
        result.prep.y_val_known[val],
        result.prep.w_val_known[val],
    )
    assert sel["val_known_pr_auc"] == {"mlp": round(ap_mlp, 5), "gbm": round(ap_gbm, 5)}
    assert sel["chosen"] == ("gbm" if ap_gbm > ap_mlp else "mlp")
    assert active_version(tmp_path) == (written["emb_gbm_version"] if sel["chosen"] == "gbm" else written["version"])
    for version in (written["version"], written["emb_gbm_version"]):
        meta = read_metadata(tmp_path / version / "metadata.json")
        assert meta.training["head_selection"] == sel and "labels known at the validation cut-off" in sel["criterion"]
