import dataclasses
import math

import pytest

from vse_tf.config import ExperimentConfig, TrainConfig
from vse_tf.model.optimizer import learning_rate_schedule


def config(**train):
    return dataclasses.replace(ExperimentConfig(), train=TrainConfig(**train))


@pytest.mark.parametrize("step", [0, 1, 37, 50, 99, 100])
def test_cosine_schedule_follows_the_half_cosine_to_zero(step):
    schedule = learning_rate_schedule(config(learning_rate=2e-3, lr_schedule="cosine", epochs=10), steps_per_epoch=10)
    want = 2e-3 * 0.5 * (1 + math.cos(math.pi * min(step, 100) / 100))
    assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_cosine_warm_up_rises_linearly_then_decays():
    schedule = learning_rate_schedule(
        config(learning_rate=1e-3, lr_schedule="cosine", lr_warmup_epochs=1, epochs=3), steps_per_epoch=10
    )
    assert float(schedule(5)) == pytest.approx(0.5e-3, rel=1e-5)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-5)
    assert float(schedule(20)) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 10 / 20)), rel=1e-5)


def test_step_schedule_is_vsepp_decay_and_constant_without_it():
    schedule = learning_rate_schedule(config(learning_rate=2e-4, lr_decay_epochs=15, lr_decay_factor=0.1), 10)
    assert float(schedule(149)) == pytest.approx(2e-4) and float(schedule(150)) == pytest.approx(2e-5)
    assert learning_rate_schedule(config(learning_rate=2e-4, lr_decay_epochs=0), 10) == 2e-4


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="train.lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_fused_adam_steps_match_a_float64_adam_and_keras_adam():
    import keras
    import numpy as np
    import tensorflow as tf

    from vse_tf.model.optimizer import ScaledRateAdam

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(5, 3)), rng.normal(size=(4,))]
    rows = np.array([0, 3, 3])  # an embedding's gradient: sparse rows, one of them twice
    steps = [(rng.normal(size=(3, 3)), rng.normal(size=(4,))) for _ in range(3)]
    pretrained = keras.Variable(start[1].astype("float32"))
    ours = [keras.Variable(start[0].astype("float32")), pretrained]
    theirs = [keras.Variable(start[0].astype("float32")), keras.Variable(start[1].astype("float32"))]
    optimizer = ScaledRateAdam(learning_rate=0.01, rate_multipliers={0.5: [pretrained]})
    keras_adams = [keras.optimizers.Adam(learning_rate=0.01), keras.optimizers.Adam(learning_rate=0.005)]
    reference = [np.array(w, np.float64) for w in start]
    moments = [[np.zeros_like(w), np.zeros_like(w)] for w in start]
    for t, (sparse, dense) in enumerate(steps, start=1):
        embedding_gradient = tf.IndexedSlices(tf.constant(sparse, tf.float32), tf.constant(rows), tf.constant([5, 3]))
        optimizer.apply([embedding_gradient, tf.constant(dense, tf.float32)], ours)
        # Keras Adam is given the dense gradient: on IndexedSlices it squares each slice before
        # summing the repeated rows, so v would hold g1^2 + g2^2 instead of (g1 + g2)^2.
        dense_gradients = [tf.convert_to_tensor(embedding_gradient), tf.constant(dense, tf.float32)]
        for adam, variable, gradient in zip(keras_adams, theirs, dense_gradients):
            adam.apply([gradient], [variable])
        full = np.zeros((5, 3))
        np.add.at(full, rows, sparse)
        for w, g, (m, v), rate in zip(reference, [full, dense], moments, [0.01, 0.005]):
            m += (g - m) * 0.1
            v += (g * g - v) * 0.001
            w -= rate * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-7)
    for got, keras_got, want in zip(ours, theirs, reference):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
        np.testing.assert_allclose(got.numpy(), keras_got.numpy(), atol=1e-6)
