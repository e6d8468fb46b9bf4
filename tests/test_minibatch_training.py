"""Neighbour-sampled mini-batch GNN training (`TrainConfig.batch_size > 0`) on a tiny world: the loss falls, the
encoder learns through the sampled subgraphs, and the exported artifact scores like the torch model (the export
and serving contract is the full-graph one). Needs the `train` extra (skipped without)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from feature_svc.world import WorldParams, generate_world  # noqa: E402
from inference_svc.artifact import read_metadata  # noqa: E402
from trainer.gnn import Encoder  # noqa: E402
from trainer.train import TrainConfig, predict, run  # noqa: E402

TINY = WorldParams(n_cards=400, n_transactions=6_000, days=21, seed=3, ring_share=0.02, card_testing_share=0.01)
CFG = TrainConfig(
    epochs=3,
    patience=3,
    val_days=5,
    test_days=5,
    progress=False,
    baseline_iter=30,
    ablation=False,
    emb_gbm=False,
    batch_size=256,
    fanout=(5, 5, 5),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # type: ignore[no-untyped-def]
    from trainer.export import export

    world = generate_world(TINY, progress=False)
    result = run(world, None, CFG)
    model_dir = tmp_path_factory.mktemp("models")
    written = export(result, model_dir, world_params=world.params.to_json())
    return result, written


def test_minibatch_training_lowers_the_loss_and_trains_the_encoder(trained) -> None:  # type: ignore[no-untyped-def]
    result, _ = trained
    history = result.gnn_info["history"]
    assert len(history) == CFG.epochs
    assert history[-1]["loss"] < history[0]["loss"]
    torch.manual_seed(CFG.seed)
    init = Encoder(CFG.hidden, CFG.dim, CFG.layers).state_dict()
    moved = [k for k, v in result.encoder.state_dict().items() if not torch.allclose(v, init[k])]
    assert any(".convs." in f".{k}" for k in moved), "the message-passing weights never changed"


def test_minibatch_model_exports_and_the_onnx_scores_like_torch(trained) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    result, written = trained
    test = result.prep.part == 2
    p_torch, x = predict(result.encoder, result.head, result.prep, test)
    meta = read_metadata(Path(written["gnn"]) / "metadata.json")
    sess = ort.InferenceSession(str(Path(written["gnn"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    p_onnx = sess.run([meta.output_name], {meta.input_name: x.numpy()})[0]
    assert np.max(np.abs(p_onnx - p_torch)) < 1e-4
    assert len(np.unique(p_onnx)) > 10  # it scores, not a constant
    assert meta.training["config"]["batch_size"] == CFG.batch_size


def test_a_fanout_per_layer_is_required() -> None:
    world = generate_world(replace(TINY, n_transactions=2_000), progress=False)
    with pytest.raises(ValueError, match="one fan-out per GNN layer"):
        run(world, None, replace(CFG, fanout=(5, 5)))
