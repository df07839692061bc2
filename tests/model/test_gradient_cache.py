"""Gradient caching gives the one-pass gradient of the whole batch's loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.config import ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.gradient_cache import cached_gradients

VOCABULARY = [f"w{i}" for i in range(7)]
BATCH = 10


def tiny_model(kind: str, max_violation: bool = False, micro_batch: int = 0, backbone: str = "features"):
    config = ExperimentConfig(
        embed_dim=8,
        image=ImageTowerConfig(backbone=backbone, feature_dim=6, image_size=16, cnn_filters=(4,)),
        text=TextTowerConfig(max_length=5, word_dim=4, gru_units=8),
        loss=LossConfig(kind=kind, max_violation=max_violation, siglip_bias=-2.0),
        train=TrainConfig(micro_batch=micro_batch),
    )
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, VOCABULARY)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def batch() -> dict:
    rng = np.random.default_rng(0)
    ids = np.arange(BATCH, dtype=np.int64)
    ids[3] = ids[2]  # a shared image: masked, not a negative
    return {
        "image": tf.constant(rng.normal(size=(BATCH, 6)).astype(np.float32) * 3),
        "tokens": tf.constant(rng.integers(1, 9, size=(BATCH, 5)).astype(np.int64)),
        "image_id": tf.constant(ids),
        "category_id": tf.constant(ids % 3),
    }


def one_pass_gradients(model, data) -> list[np.ndarray]:
    """The reference: one tape over both towers and the loss of the whole batch."""
    with tf.GradientTape() as tape:
        embedded = model(data, training=True)
        loss = model.ranking_loss(embedded, data["image_id"], data.get("category_id"))
    return [np.asarray(tf.convert_to_tensor(g)) for g in tape.gradient(loss, model.trainable_variables)]


CASES = [("triplet", True), ("infonce", False), ("siglip", False), ("pairwise", False)]


@pytest.mark.parametrize(("kind", "max_violation"), CASES)
def test_cached_gradients_equal_the_one_pass_gradient(kind, max_violation):
    micro_batch = 3  # uneven micro-batches: 3, 3, 3, 1; the loss in chunks of 3 image rows (not pairwise)
    model, data = tiny_model(kind, max_violation, micro_batch), batch()
    expected = one_pass_gradients(model, data)
    loss, got = tf.function(lambda d: cached_gradients(model, d, micro_batch))(data)
    assert len(got) == len(expected) == len(model.trainable_variables)
    scale = max(float(np.max(np.abs(g))) for g in expected)
    for variable, want, have in zip(model.trainable_variables, expected, got):
        np.testing.assert_allclose(np.asarray(have), want, atol=1e-5 * scale, err_msg=variable.path)
    embedded = model(data, training=True)
    assert float(loss) == pytest.approx(float(model.ranking_loss(embedded, data["image_id"], data["category_id"])))


def test_fit_with_micro_batches_takes_the_same_step_as_without():
    data = batch()
    weights = []
    for micro in (0, 4):
        model = tiny_model("infonce", micro_batch=micro)
        model.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0)
        weights.append(model.get_weights())
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(weights[0], tiny_model("infonce").get_weights()))
    assert moved > 1e-3
    for plain, cached in zip(*weights):
        np.testing.assert_allclose(cached, plain, atol=1e-5 * max(1.0, moved))


def test_batch_statistics_are_refused():
    with pytest.raises(ValueError, match="BatchNormalization.*train.micro_batch"):
        tiny_model("triplet", micro_batch=2, backbone="small_cnn")
