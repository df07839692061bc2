"""ProjectedGRU against a float64 NumPy GRU loop and against keras.layers.GRU with the same weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.text.gru import ProjectedGRU, gru_last_state

UNITS, FEATURES = 6, 5
# Valid steps per row (left-aligned, then padding); row 3 is all padding.
LENGTHS = [4, 2, 4, 0, 1]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_gru(inputs, mask, state, kernel, recurrent_kernel, bias, go_backwards=False):
    """The Keras GRU (reset_after, gates z, r, h) one row and one step at a time, in float64;
    a padded step keeps the state."""
    inputs, kernel, recurrent_kernel, bias = (
        np.asarray(a, np.float64) for a in (inputs, kernel, recurrent_kernel, bias)
    )
    units = recurrent_kernel.shape[0]
    finals = []
    for row in range(inputs.shape[0]):
        h = np.array(state[row], np.float64)
        steps = range(inputs.shape[1] - 1, -1, -1) if go_backwards else range(inputs.shape[1])
        for t in steps:
            if not mask[row, t]:
                continue
            x = inputs[row, t] @ kernel + bias[0]
            inner = h @ recurrent_kernel + bias[1]
            z = sigmoid(x[:units] + inner[:units])
            r = sigmoid(x[units : 2 * units] + inner[units : 2 * units])
            candidate = np.tanh(x[2 * units :] + r * inner[2 * units :])
            h = z * h + (1 - z) * candidate
        finals.append(h)
    return np.stack(finals)


def example(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    steps = max(LENGTHS)
    mask = np.arange(steps)[None, :] < np.array(LENGTHS)[:, None]
    inputs = rng.normal(size=(len(LENGTHS), steps, FEATURES)).astype(dtype)
    inputs[~mask] = rng.normal(size=inputs[~mask].shape) * 10  # padding must not matter
    weights = [
        rng.normal(size=(FEATURES, 3 * UNITS)) * 0.5,
        rng.normal(size=(UNITS, 3 * UNITS)) * 0.5,
        rng.normal(size=(2, 3 * UNITS)) * 0.5,
    ]
    return inputs, mask, [w.astype(dtype) for w in weights]


def built(layer_class, weights, **kwargs):
    layer = layer_class(UNITS, **kwargs)
    layer.build((None, None, FEATURES))
    layer.set_weights(weights)
    return layer


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_matches_a_float64_loop_and_keras_gru(go_backwards, training):
    inputs, mask, weights = example()
    want = numpy_gru(inputs, mask, np.zeros((len(LENGTHS), UNITS)), *weights, go_backwards=go_backwards)
    ours = built(ProjectedGRU, weights, go_backwards=go_backwards)
    theirs = built(keras.layers.GRU, weights, go_backwards=go_backwards)
    got = ours(inputs, mask=mask, training=training).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, theirs(inputs, mask=mask, training=training).numpy(), atol=1e-5)
    np.testing.assert_array_equal(got[3], 0.0)  # all padding: the initial state


def test_gradients_match_keras_gru_under_a_tf_function():
    inputs, mask, weights = example(seed=1)
    ours = built(ProjectedGRU, weights)
    theirs = built(keras.layers.GRU, weights)
    probe = tf.constant(np.random.default_rng(2).normal(size=(len(LENGTHS), UNITS)), tf.float32)
    x = tf.constant(inputs)

    def gradients(layer):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(probe * tf.tanh(layer(x, mask=mask, training=True)))
            return tape.gradient(loss, [x, *layer.trainable_variables])

        return [g.numpy() for g in run()]

    for got, want in zip(gradients(ours), gradients(theirs), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(gradients(ours)[0][~mask]).max() == 0.0  # padded inputs get no gradient


@pytest.mark.parametrize("go_backwards", [False, True])
def test_hand_written_gradient_matches_finite_differences_of_the_float64_loop(go_backwards):
    inputs, mask, weights = example(seed=3, dtype=np.float64)
    state = np.random.default_rng(4).normal(size=(len(LENGTHS), UNITS))
    arguments = [inputs, state, *weights]
    tensors = [tf.constant(a) for a in arguments]
    probe = np.random.default_rng(5).normal(size=(len(LENGTHS), UNITS))

    def loss(values):
        return float(np.sum(probe * numpy_gru(values[0], mask, values[1], *values[2:], go_backwards=go_backwards)))

    with tf.GradientTape() as tape:
        tape.watch(tensors)
        final = gru_last_state(tensors[0], tf.constant(mask), tensors[1], *tensors[2:], go_backwards=go_backwards)
        value = tf.reduce_sum(probe * final)
    grads = tape.gradient(value, tensors)
    np.testing.assert_allclose(value.numpy(), loss(arguments), atol=1e-12)
    rng = np.random.default_rng(6)
    for index, gradient in enumerate(grads):
        direction = rng.normal(size=arguments[index].shape)
        epsilon = 1e-6
        plus = [a + epsilon * direction if i == index else a for i, a in enumerate(arguments)]
        minus = [a - epsilon * direction if i == index else a for i, a in enumerate(arguments)]
        numeric = (loss(plus) - loss(minus)) / (2 * epsilon)
        np.testing.assert_allclose(np.sum(gradient.numpy() * direction), numeric, rtol=1e-6, atol=1e-8)


def test_bidirectional_round_trip_and_keras_weights_load(tmp_path):
    inputs, mask, weights = example(seed=7)
    inputs[~mask] = 0.0  # Masking(0) marks the padded steps

    def model(gru_class):
        steps = keras.Input((None, FEATURES))
        masked = keras.layers.Masking(0.0)(steps)
        return keras.Model(steps, keras.layers.Bidirectional(gru_class(UNITS), merge_mode="ave", name="bigru")(masked))

    ours, theirs = model(ProjectedGRU), model(keras.layers.GRU)
    theirs.save_weights(tmp_path / "keras_gru.weights.h5")
    ours.load_weights(tmp_path / "keras_gru.weights.h5")  # same variables, same layout
    zeros = np.zeros((len(LENGTHS), UNITS))
    forward = numpy_gru(inputs, mask, zeros, *theirs.get_weights()[:3])
    backward = numpy_gru(inputs, mask, zeros, *theirs.get_weights()[3:], go_backwards=True)
    np.testing.assert_allclose(ours(inputs).numpy(), (forward + backward) / 2, atol=1e-5)
    np.testing.assert_allclose(ours(inputs).numpy(), theirs(inputs).numpy(), atol=1e-5)
    clone = keras.Model.from_config(ours.get_config())
    assert isinstance(clone.get_layer("bigru").backward_layer, ProjectedGRU)


def test_xla_compiled_training_step_matches_keras_gru():
    inputs, mask, weights = example(seed=8)
    results = []
    for layer_class in (ProjectedGRU, keras.layers.GRU):
        layer = built(layer_class, weights)

        @tf.function(jit_compile=True)
        def run(x, m, layer=layer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(layer(x, mask=m, training=True)))
            return loss, tape.gradient(loss, layer.trainable_variables)

        loss, grads = run(tf.constant(inputs), tf.constant(mask))
        results.append([loss.numpy(), *(g.numpy() for g in grads)])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_exported_text_tower_is_core_tensorflow_and_gives_the_float64_loop(tmp_path):
    from vse_tf.config import ExperimentConfig, ImageTowerConfig, TextTowerConfig
    from vse_tf.model.dual_encoder import build_dual_encoder
    from vse_tf.serving.export import export_towers
    from vse_tf.serving.model_card import saved_model_ops
    from vse_tf.text.tokenizer import SentenceTokenizer

    vocabulary = ["a", "red", "block", "left"]
    config = ExperimentConfig(
        embed_dim=UNITS,
        image=ImageTowerConfig(backbone="features", feature_dim=3),
        text=TextTowerConfig(max_length=6, word_dim=FEATURES, gru_units=UNITS),
    )
    model = build_dual_encoder(config, vocabulary)
    assert isinstance(model.text_encoder.get_layer("gru"), ProjectedGRU)
    tokenizer = SentenceTokenizer(vocabulary, config.text.max_length)
    paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, tmp_path)
    ops = saved_model_ops(paths["text_encoder"])
    assert "StatelessWhile" in ops and all(hasattr(tf.raw_ops, op) for op in ops), ops
    sentences = ["a red block", "left", "block block a red left"]
    served = tf.saved_model.load(str(paths["text_encoder"])).signatures["serving_default"]
    got = served(sentences=tf.constant(sentences))["embeddings"].numpy()
    tokens = tokenizer(tf.constant(sentences)).numpy()
    table = model.text_encoder.get_layer("word_embedding").get_weights()[0]
    states = numpy_gru(
        table[tokens], tokens != 0, np.zeros((3, UNITS)), *model.text_encoder.get_layer("gru").get_weights()
    )
    np.testing.assert_allclose(got, states / np.linalg.norm(states, axis=1, keepdims=True), atol=1e-5)
