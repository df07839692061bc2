import json
import struct

import numpy as np
import pytest
from conftest import tiny_config

from vse_tf.config import TextTowerConfig
from vse_tf.text.towers import build_text_tower
from vse_tf.text.word_vectors import detect_format, initialize_word_embedding, read_word_vectors
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
