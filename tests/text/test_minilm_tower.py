"""text.encoder = "minilm" through the same commands as the GRU tower: train.fit, export.export, reload.

For speed the encoder keeps only its first pretrained block (``text.pretrained_layers=1``);
the port itself is proven in ``test_minilm.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config, write_tiny_karpathy

from export.export import main as export_main
from train.fit import main as fit_main
from vse_tf.config import ExperimentConfig, LossConfig, TextTowerConfig, TrainConfig
from vse_tf.model.optimizer import build_optimizer
from vse_tf.text.minilm import BertBlock, BertEmbeddings
from vse_tf.text.towers import build_text_tower, build_tokenizer, pretrained_variables, text_vocabulary
from vse_tf.training.run import restore_run

RELOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the TF Text ops a model server links)
assert "vse_tf" not in sys.modules
text = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
print(json.dumps(text(sentences=tf.constant(json.loads(sys.argv[2])))["embeddings"].numpy().tolist()))
"""


def minilm_text(**fields) -> TextTowerConfig:
    return TextTowerConfig(**{"encoder": "minilm", "max_length": 16, "pretrained_layers": 1, **fields})


def test_two_steps_of_fit_then_export_and_a_fresh_process_reload(tmp_path):
    data = tmp_path / "data"
    write_tiny_karpathy(data, {"train": 16, "val": 8, "test": 8})
    config = tiny_config(data, tmp_path / "run", epochs=1)  # 16 images / batch 8: two steps
    config = dataclasses.replace(config, text=minilm_text(trainable_layers=1), loss=LossConfig(kind="infonce"))
    config.save(tmp_path / "config.json")
    assert fit_main(["--config", str(tmp_path / "config.json"), "--verbose", "0"]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert np.isfinite(history["loss"][0]) and history["logit_scale"][0] != pytest.approx(1 / 0.07, abs=1e-6)
    assert json.loads((tmp_path / "run" / "training_summary.json").read_text())["optimizer_steps"] == 2
    assert "rsum" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert export_main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "models")]) == 0

    text_dir = tmp_path / "models" / "text_encoder" / "1"
    card = json.loads((text_dir / "assets.extra" / "model_card.json").read_text())
    assert card["custom_ops"] == ["NormalizeUTF8", "WordpieceTokenizeWithOffsets"]
    assert "stock tensorflow/serving" in card["runtime"]
    sentences = ["a red block on the left", "Blue, on the RIGHT!", ""]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(text_dir), json.dumps(sentences)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    run = restore_run(tmp_path / "run")  # tokenizer, fine-tuned encoder, pooling, projection, L2
    expected = run.model.text_encoder(run.tokenizer(tf.constant(sentences))).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_fine_tuning_fields_pick_the_trainable_weights_and_their_rate():
    frozen = build_text_tower(minilm_text(pretrained_layers=2), [], 8)
    assert pretrained_variables(frozen) == []
    assert {v.path.split("/")[0] for v in frozen.trainable_variables} == {"projection"}
    top = build_text_tower(minilm_text(pretrained_layers=2, trainable_layers=1), [], 8)
    encoder = top.get_layer("minilm")
    assert [layer.name for layer in encoder.layers if layer.trainable and layer.weights] == ["layer_1"]
    everything = build_text_tower(minilm_text(pretrained_layers=2, trainable_layers=-1), [], 8)
    trained = [layer for layer in everything.get_layer("minilm").layers if layer.trainable and layer.weights]
    assert {type(layer) for layer in trained} == {BertEmbeddings, BertBlock}

    # One Adam step moves a pretrained weight by rate * multiplier, the projection by the rate.
    config = ExperimentConfig(
        text=minilm_text(pretrained_layers=2, trainable_layers=1),
        train=TrainConfig(lr_decay_epochs=0, grad_clip_norm=0.0),
    )
    optimizer = build_optimizer(config, steps_per_epoch=1, pretrained_variables=pretrained_variables(top))
    variables = top.trainable_variables
    before = [np.array(v) for v in variables]
    ids = build_tokenizer(config.text, text_vocabulary(config.text, []))(tf.constant(["a dog", "two cats"]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(top(ids, training=True)[:, 0])
    optimizer.apply(tape.gradient(loss, variables), variables)
    steps = {v.path: float(np.max(np.abs(np.array(v) - b))) for v, b in zip(variables, before)}
    rate = config.train.learning_rate
    assert steps["projection/kernel"] == pytest.approx(rate, rel=1e-2)
    assert steps["layer_1/query/kernel"] == pytest.approx(rate * 0.1, rel=1e-2)
