import keras
import numpy as np
import pytest

from vse_tf.config import ImageTowerConfig, TextTowerConfig
from vse_tf.image.towers import build_image_tower
from vse_tf.text.towers import build_text_tower

VOCABULARY = ["a", "red", "circle", "left", "of"]


def assert_round_trip(model, inputs):
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), model(inputs).numpy(), atol=1e-6)
    return clone


@pytest.mark.parametrize(
    "config, inputs",
    [
        (
            ImageTowerConfig(backbone="small_cnn", image_size=16, cnn_filters=(4, 8), dropout=0.1),
            np.random.rand(3, 16, 16, 3) * 255,
        ),
        (ImageTowerConfig(backbone="features", feature_dim=12), np.random.rand(3, 12)),
    ],
)
def test_image_tower_outputs_unit_rows_and_round_trips(config, inputs):
    tower = build_image_tower(config, embed_dim=8)
    embeddings = tower(inputs.astype("float32")).numpy()
    assert embeddings.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert_round_trip(tower, inputs.astype("float32"))


@pytest.mark.parametrize("bidirectional, gru_units", [(False, 8), (True, 6)])
def test_text_tower_outputs_unit_rows_and_round_trips(bidirectional, gru_units):
    config = TextTowerConfig(max_length=5, word_dim=4, gru_units=gru_units, bidirectional=bidirectional)
    tower = build_text_tower(config, VOCABULARY, embed_dim=8)
    tokens = np.array([[2, 3, 4, 0, 0], [6, 5, 1, 2, 0]], dtype="int64")
    embeddings = tower(tokens).numpy()
    assert embeddings.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert_round_trip(tower, tokens)


def test_text_tower_ignores_padding():
    tower = build_text_tower(TextTowerConfig(max_length=6, word_dim=4, gru_units=8), VOCABULARY, embed_dim=8)
    padded = tower(np.array([[2, 3, 0, 0, 0, 0]], dtype="int64")).numpy()
    # same words without the padding: masking makes the GRU state the one after word 2
    unpadded = tower(np.array([[2, 3]], dtype="int64")).numpy()
    other = tower(np.array([[2, 3, 4, 0, 0, 0]], dtype="int64")).numpy()
    np.testing.assert_allclose(padded, unpadded, atol=1e-6)
    assert not np.allclose(padded, other)


def test_vgg19_tower_is_fc7_plus_projection_and_loads_a_local_weights_file(tmp_path):
    reference = keras.applications.VGG19(weights=None)
    weights = tmp_path / "vgg19.weights.h5"
    reference.save_weights(weights)
    tower = build_image_tower(ImageTowerConfig(backbone="vgg19", image_size=32, weights=str(weights)), embed_dim=8)
    backbone = tower.get_layer("vgg19_fc7")
    assert backbone.output.shape[-1] == 4096
    assert not backbone.trainable  # finetune=False freezes it
    np.testing.assert_array_equal(
        backbone.get_layer("block1_conv1").get_weights()[0], reference.get_layer("block1_conv1").get_weights()[0]
    )
    assert tower(np.random.rand(1, 32, 32, 3).astype("float32") * 255).shape == (1, 8)
    trainable = {w.path for w in tower.trainable_weights}
    assert all("projection" in path for path in trainable)
