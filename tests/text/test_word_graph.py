"""The graph text encoder: word graph, layer, config round trip, training, export."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import RELOAD_SCRIPT, SENTENCES, VOCABULARY, tiny_config

from vse_tf.config import TextTowerConfig, with_overrides
from vse_tf.data.pipeline import training_dataset
from vse_tf.data.splits import load_split
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.serving.export import export_towers
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.text.towers import build_text_tower
from vse_tf.text.word_graph import WordGraphConvolution, build_word_graph, initialize_word_graph

CORPUS = ["red block left", "red block", "green ball right", "green ball", "red ball left", "the end"]


def npmi(texts, a, b):
    holds = [set(text.split()) for text in texts]
    p_a = np.mean([a in words for words in holds])
    p_b = np.mean([b in words for words in holds])
    p_ab = np.mean([a in words and b in words for words in holds])
    return np.log(p_ab / (p_a * p_b)) / -np.log(p_ab)


def graph_config(**overrides):
    return TextTowerConfig(max_length=8, encoder="graph", graph_neighbours=3, graph_channels=(4, 3), **overrides)


def test_word_graph_keeps_the_strongest_npmi_neighbours_row_normalised():
    vocabulary = build_vocabulary(CORPUS)
    graph = build_word_graph(CORPUS, vocabulary, neighbours=2)
    ids = {word: index + 2 for index, word in enumerate(vocabulary)}
    dense = graph.dense()
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-6)
    assert dense[0, 0] == 1.0 and dense[1, 1] == 1.0  # padding and OOV: self loop only
    # "the" and "end" always co-occur and nothing else: NPMI 1, each other's top neighbour.
    assert graph.neighbours[ids["the"], 1] == ids["end"]
    assert dense[ids["the"], ids["end"]] == pytest.approx(0.5)  # self 1 and NPMI 1, normalised
    # row "block": self weight 1 plus its two largest positive NPMIs, in that ratio.
    block = ids["block"]
    expected = {"red": npmi(CORPUS, "block", "red"), "left": npmi(CORPUS, "block", "left")}
    assert min(expected.values()) > 0
    total = 1.0 + sum(expected.values())
    for word, value in expected.items():
        assert dense[block, ids[word]] == pytest.approx(value / total, rel=1e-5)
    assert dense[block, ids["green"]] == 0.0  # never together: no edge


def test_layer_propagates_with_the_dense_graph_and_ignores_padding():
    vocabulary = build_vocabulary(CORPUS)
    graph = build_word_graph(CORPUS, vocabulary, neighbours=3)
    layer = WordGraphConvolution(len(vocabulary) + 2, 3, channels=(2,))
    layer.build()
    layer.set_graph(graph)
    tokenizer = SentenceTokenizer(vocabulary, 6)
    tokens = tokenizer(tf.constant(["red red block", "green"]))
    signal = layer.bag_of_words(tokens).numpy()
    assert signal[0, 0] == 0.0  # padding ids are not words
    assert signal[0, vocabulary.index("red") + 2] == pytest.approx(np.log(3.0))
    kernel, bias = layer.kernels[0].numpy(), layer.biases[0].numpy()
    expected = np.maximum((graph.dense() @ signal.T).T[..., None] * kernel[0] + bias, 0.0)
    np.testing.assert_allclose(layer(tokens).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="word graph of shape"):
        layer.set_graph(build_word_graph(CORPUS, vocabulary, neighbours=1))


def test_graph_tower_config_round_trip_and_weights_carry_the_graph(tmp_path):
    vocabulary = build_vocabulary(CORPUS)
    tower = build_text_tower(graph_config(), vocabulary, embed_dim=5)
    initialize_word_graph(tower, CORPUS, vocabulary)
    tokens = SentenceTokenizer(vocabulary, 8)(tf.constant(["red block left", "green ball", ""]))
    clone = keras.Model.from_config(tower.get_config())
    assert clone.get_layer("graph_convolution").get_config() == tower.get_layer("graph_convolution").get_config()
    clone.load_weights(_saved(tower, tmp_path / "tower.weights.h5"))
    np.testing.assert_allclose(clone(tokens).numpy(), tower(tokens).numpy(), atol=1e-6)
    np.testing.assert_array_equal(
        clone.get_layer("graph_convolution").graph_neighbours.numpy(),
        tower.get_layer("graph_convolution").graph_neighbours.numpy(),
    )
    np.testing.assert_allclose(np.linalg.norm(tower(tokens).numpy()[:2], axis=1), 1.0, atol=1e-5)


def _saved(model, path):
    model.save_weights(str(path))
    return str(path)


def test_graph_encoder_training_lowers_the_loss(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    config = with_overrides(config, {"text.encoder": "graph", "text.graph_neighbours": 3, "text.graph_channels": (4,)})
    split = load_split(config, "train")
    vocabulary = build_vocabulary(split.captions)
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, vocabulary)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4))
    initialize_word_graph(model.text_encoder, split.captions, vocabulary)
    dataset = training_dataset(split, SentenceTokenizer(vocabulary, config.text.max_length), config)
    before = model.evaluate(dataset, verbose=0)
    model.fit(dataset, epochs=8, shuffle=False, verbose=0)
    after = model.evaluate(dataset, verbose=0)
    assert after < 0.5 * before


def test_exported_graph_tower_reloads_in_plain_tensorflow_with_the_same_embeddings(tiny_dataset, tmp_path):
    config = with_overrides(
        tiny_config(tiny_dataset, tmp_path / "run"),
        {"text.encoder": "graph", "text.graph_neighbours": 3, "text.graph_channels": (4,)},
    )
    model = build_dual_encoder(config, VOCABULARY)
    initialize_word_graph(model.text_encoder, ["a red block on the left", "a green block on the right"], VOCABULARY)
    tokenizer = SentenceTokenizer(VOCABULARY, config.text.max_length)
    paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, tmp_path / "models")
    images = sorted(str(p) for p in (tiny_dataset / "images").glob("*.png"))[:1]
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path / "models"), json.dumps(images), json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        check=True,
    )
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    want = model.text_encoder(tokenizer(tf.constant(SENTENCES))).numpy()
    np.testing.assert_allclose(np.array(reloaded["text"]), want, atol=1e-5)
    assert reloaded["modules"] == []
    card = json.loads((paths["text_encoder"] / "assets.extra" / "model_card.json").read_text())
    assert card["custom_ops"] == [] and "DenseBincount" in card["ops"]
