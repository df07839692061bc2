"""Graph text encoder (Yu et al., PCM 2018): a document is a bag-of-words signal on a word graph.

The word graph is built once from the training corpus and then fixed:

- Nodes are the token ids of the vocabulary (0 = padding, 1 = OOV, words from 2).
- Two words are linked by their normalised pointwise mutual information over texts,
  ``npmi(a, b) = log(p(a, b) / (p(a) p(b))) / -log p(a, b)``, where ``p(a)`` is the share
  of training texts holding ``a`` and ``p(a, b)`` the share holding both. Each word keeps
  its ``k`` neighbours of largest positive NPMI (a kNN graph; fewer when it has fewer).
- The propagation matrix is ``A_hat = D^-1 (I + A)``: a self loop of weight 1 (the
  largest NPMI possible) plus the kept NPMI weights, each row divided by its sum.

It is stored as a fixed-width neighbour list (``[V, k + 1]`` indices and weights, column
0 the node itself) in two non-trainable weights of :class:`WordGraphConvolution`, so
checkpoints, ``load_weights`` and SavedModel exports carry it, and one propagation is a
gather and a weighted sum: ``O(B * V * (k + 1) * C)``, never a dense ``V x V`` matrix.

A text's signal is ``x[v] = log(1 + count of word v)`` (padding excluded); each layer is
``H' = relu(A_hat H W + b)`` (Kipf & Welling) with ``W`` shared by all nodes; the tower
then flattens the node features (so which word carried them is kept), projects them to
the joint space and L2-normalises (:func:`vse_tf.text.towers.build_text_tower`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from vse_tf.text.tokenizer import split_words

FIRST_WORD_ID = 2  # 0 is padding, 1 is OOV (see vse_tf.text.tokenizer.SentenceTokenizer)


@dataclasses.dataclass(frozen=True)
class WordGraph:
    """A fixed-width neighbour list: row ``v`` is node ``v``'s row of ``A_hat``.

    Attributes:
        neighbours: ``int32 [V, k + 1]`` node ids; column 0 is the node itself; unused
            slots repeat the node with weight 0.
        weights: ``float32 [V, k + 1]``, each row sums to 1.
    """

    neighbours: np.ndarray
    weights: np.ndarray

    def dense(self) -> np.ndarray:
        """``A_hat`` as a dense ``[V, V]`` matrix (for tests and small vocabularies)."""
        size = self.neighbours.shape[0]
        matrix = np.zeros((size, size), np.float64)
        np.add.at(
            matrix,
            (np.repeat(np.arange(size), self.neighbours.shape[1]), self.neighbours.ravel()),
            self.weights.ravel(),
        )
        return matrix


def text_word_ids(texts: Sequence[str], vocabulary: Sequence[str]) -> list[np.ndarray]:
    """The distinct vocabulary ids (>= 2) of each text, tokenised as the text tower does."""
    index = {word: position + FIRST_WORD_ID for position, word in enumerate(vocabulary)}
    ids = []
    for start in range(0, len(texts), 4096):
        for words in split_words(list(texts[start : start + 4096])):
            ids.append(np.unique(np.array([index[word] for word in words if word in index], dtype=np.int64)))
    return ids


def build_word_graph(
    texts: Sequence[str], vocabulary: Sequence[str], neighbours: int, block_rows: int = 1024
) -> WordGraph:
    """The NPMI kNN word graph of a corpus (see the module docstring).

    Args:
        texts: the training texts (captions or articles).
        vocabulary: the tokenizer's words (ids ``2 ..``).
        neighbours: ``k``, neighbours kept per word.
        block_rows: words (and texts) per block of the co-occurrence count; memory is
            ``O(block_rows * V)``, never ``V x V``.

    Returns:
        The graph over ``len(vocabulary) + 2`` nodes.
    """
    if not texts:
        raise ValueError("build_word_graph: no texts to build the word graph from")
    size = len(vocabulary) + FIRST_WORD_ID
    ids = text_word_ids(texts, vocabulary)
    texts_count = float(len(texts))
    word_probability = np.zeros(size, np.float64)
    for text_ids in ids:
        word_probability[text_ids] += 1.0
    word_probability /= texts_count
    graph_ids = np.repeat(np.arange(size, dtype=np.int32)[:, None], neighbours + 1, axis=1)
    graph_weights = np.zeros((size, neighbours + 1), np.float32)
    graph_weights[:, 0] = 1.0
    for start in range(0, size, block_rows):
        stop = min(size, start + block_rows)
        joint = np.zeros((stop - start, size), np.float64)
        for first in range(0, len(ids), block_rows):
            occurrences = _occurrences(ids[first : first + block_rows], size)  # [texts, V]
            joint += occurrences[:, start:stop].T @ occurrences
        joint /= texts_count
        npmi = _npmi(joint, word_probability[start:stop], word_probability)
        npmi[np.arange(stop - start), np.arange(start, stop)] = 0.0  # the self loop is added apart
        top = np.argsort(-npmi, axis=1, kind="stable")[:, :neighbours]  # fewer when V <= k
        top_weights = np.take_along_axis(npmi, top, axis=1)
        kept = top_weights > 0
        slots = slice(1, 1 + top.shape[1])
        graph_ids[start:stop, slots] = np.where(kept, top, graph_ids[start:stop, slots])
        graph_weights[start:stop, slots] = np.where(kept, top_weights, 0.0)
    graph_weights /= graph_weights.sum(axis=1, keepdims=True)
    return WordGraph(graph_ids, graph_weights.astype(np.float32))


def _occurrences(ids: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``[len(ids), size]`` 0/1 matrix: which words each text holds."""
    occurrences = np.zeros((len(ids), size), np.float64)
    for row, text_ids in enumerate(ids):
        occurrences[row, text_ids] = 1.0
    return occurrences


def _npmi(joint: np.ndarray, row_probability: np.ndarray, column_probability: np.ndarray) -> np.ndarray:
    """Normalised PMI in [-1, 1]; 0 where a pair never co-occurs."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(joint / (row_probability[:, None] * column_probability[None, :]))
        npmi = pmi / -np.log(joint)
    # p(a, b) == 1 (both words in every text) gives 0/0: perfectly associated.
    npmi = np.where(joint >= 1.0, 1.0, npmi)
    return np.where((joint > 0) & np.isfinite(npmi), npmi, 0.0).astype(np.float32)


def _self_neighbours(shape, dtype=None):
    return tf.tile(tf.range(shape[0], dtype=tf.int32)[:, None], [1, shape[1]])


def _self_weights(shape, dtype=None):
    return tf.one_hot(tf.zeros([shape[0]], tf.int32), shape[1], dtype=tf.float32)


@keras.saving.register_keras_serializable(package="vse_tf")
class WordGraphConvolution(layers.Layer):
    """Token ids -> bag-of-words signal on the word graph -> stacked graph convolutions.

    The graph (``graph_neighbours``, ``graph_weights``) is a pair of non-trainable weights,
    self loops only until :meth:`set_graph` (the training entry points call it with
    :func:`build_word_graph`); checkpoints and exports carry it like any weight.

    Call args:
        tokens: ``int [B, L]`` ids from :class:`vse_tf.text.tokenizer.SentenceTokenizer` (0 = padding).

    Returns:
        ``float [B, V, channels[-1]]`` node features.

    Args:
        vocabulary_size: ``V``, number of ids (padding and OOV included).
        neighbours: ``k``, neighbours per node.
        channels: output channels of each convolution.
    """

    def __init__(self, vocabulary_size: int, neighbours: int, channels: Sequence[int] = (16, 16), **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.neighbours = int(neighbours)
        self.channels = tuple(int(channel) for channel in channels)

    def build(self, input_shape=None):
        width = (self.vocabulary_size, self.neighbours + 1)
        # Until set_graph: every node linked to itself only (a bag of words without a graph).
        self.graph_neighbours = self.add_weight(
            shape=width, dtype="int32", initializer=_self_neighbours, trainable=False, name="graph_neighbours"
        )
        self.graph_weights = self.add_weight(
            shape=width, dtype="float32", initializer=_self_weights, trainable=False, name="graph_weights"
        )
        self.kernels, self.biases = [], []
        inputs = 1
        for layer, outputs in enumerate(self.channels):
            self.kernels.append(
                self.add_weight(shape=(inputs, outputs), initializer="glorot_uniform", name=f"kernel_{layer}")
            )
            self.biases.append(self.add_weight(shape=(outputs,), initializer="zeros", name=f"bias_{layer}"))
            inputs = outputs

    def set_graph(self, graph: WordGraph) -> None:
        """Stores the word graph (shapes must match ``[V, k + 1]``)."""
        expected = (self.vocabulary_size, self.neighbours + 1)
        if graph.neighbours.shape != expected or graph.weights.shape != expected:
            raise ValueError(f"word graph of shape {graph.neighbours.shape}, the layer expects {expected}")
        self.graph_neighbours.assign(graph.neighbours.astype(np.int32))
        self.graph_weights.assign(graph.weights.astype(np.float32))

    def bag_of_words(self, tokens):
        """``int [B, L]`` -> ``float [B, V]``: ``log(1 + count)`` of each id, padding zeroed."""
        counts = tf.math.bincount(
            tf.cast(tokens, tf.int32),
            minlength=self.vocabulary_size,
            maxlength=self.vocabulary_size,
            dtype=tf.float32,
            axis=-1,
        )
        not_padding = tf.one_hot(0, self.vocabulary_size, on_value=0.0, off_value=1.0)
        return tf.math.log1p(counts) * not_padding

    def propagate(self, nodes):
        """``A_hat @ nodes`` for ``nodes: [B, V, C]``."""
        gathered = tf.gather(nodes, self.graph_neighbours, axis=1)  # [B, V, k + 1, C]
        weights = tf.cast(self.graph_weights, nodes.dtype)
        return tf.einsum("bvkc,vk->bvc", gathered, weights)

    def call(self, tokens):
        nodes = tf.cast(self.bag_of_words(tokens), self.compute_dtype)[..., None]
        for kernel, bias in zip(self.kernels, self.biases):
            nodes = tf.nn.relu(tf.matmul(self.propagate(nodes), kernel) + bias)
        return nodes

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.vocabulary_size, self.channels[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "neighbours": self.neighbours,
            "channels": list(self.channels),
        }


def initialize_word_graph(text_encoder: keras.Model, texts: Sequence[str], vocabulary: Sequence[str]) -> WordGraph:
    """Builds the corpus word graph and stores it in the graph text tower.

    Args:
        text_encoder: a tower from :func:`vse_tf.text.towers.build_text_tower` with ``encoder="graph"``.
        texts: the training texts.
        vocabulary: the tokenizer's vocabulary.
    """
    layer = text_encoder.get_layer("graph_convolution")
    graph = build_word_graph(texts, vocabulary, layer.neighbours)
    layer.set_graph(graph)
    return graph
