"""The text tower: a standalone functional Keras model over token ids, built from config.

Token ids ``[B, L]`` -> word embedding -> GRU (or graph convolutions over the word graph, or
the pretrained MiniLM encoder with pooling) -> projection -> L2 normalisation. Tokenisation
is a separate layer (:class:`vse_tf.text.tokenizer.SentenceTokenizer`, or
:class:`vse_tf.text.wordpiece.WordPieceTokenizer` for MiniLM; :func:`build_tokenizer`)
because Keras ``fit`` under MirroredStrategy cannot take ``tf.string`` model inputs; the
exported text SavedModel puts the two together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import tensorflow as tf
from keras import layers, ops

from vse_tf.config import TextTowerConfig
from vse_tf.layers import unit_rows
from vse_tf.text.gru import ProjectedGRU
from vse_tf.text.minilm import build_pretrained_sentence_encoder, read_tokenizer_json, set_trainable_blocks
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.text.word_graph import WordGraphConvolution
from vse_tf.text.word_vectors import extend_vocabulary
from vse_tf.text.wordpiece import WordPieceTokenizer, vocabulary_from_tokenizer_json

PRETRAINED_TEXT_ENCODER = "minilm"  # the pretrained sub-model's name inside the text tower


def text_vocabulary(config: TextTowerConfig, captions: Iterable[str]) -> list[str]:
    """The tokenizer's vocabulary: the training captions' words (then, with
    ``text.vocabulary_from_word_vectors``, the vectors file's words they lack), or
    (``minilm``) the pretrained WordPiece one."""
    if config.encoder == "minilm":
        return vocabulary_from_tokenizer_json(read_tokenizer_json(config.pretrained))
    vocabulary = build_vocabulary(captions, config.min_word_count)
    if config.vocabulary_from_word_vectors:
        count = config.vocabulary_from_word_vectors
        return extend_vocabulary(vocabulary, config.word_vectors, config.word_vectors_format, count)
    return vocabulary


def build_tokenizer(
    config: TextTowerConfig, vocabulary: Sequence[str], pad_to_longest: bool = False
) -> SentenceTokenizer | WordPieceTokenizer:
    """The tokenizer layer that feeds the text tower: ``tf.string [B]`` -> ``int64 [B, max_length]``."""
    if config.encoder == "minilm":
        return WordPieceTokenizer(vocabulary, config.max_length, pad_to_longest=pad_to_longest)
    return SentenceTokenizer(vocabulary, config.max_length, pad_to_longest=pad_to_longest)


def pretrained_variables(text_encoder: keras.Model) -> list:
    """The trainable variables of the tower's pretrained encoder (none for ``gru`` / ``graph``)."""
    if not any(layer.name == PRETRAINED_TEXT_ENCODER for layer in text_encoder.layers):
        return []
    return list(text_encoder.get_layer(PRETRAINED_TEXT_ENCODER).trainable_variables)


def build_text_tower(
    config: TextTowerConfig, vocabulary: Sequence[str], embed_dim: int, name: str = "text_encoder"
) -> keras.Model:
    """Builds the text tower over token ids.

    Args:
        config: sizes of the word embedding and GRU.
        vocabulary: the words (without padding and OOV), as given to the tokenizer.
        embed_dim: width of the joint space.

    Returns:
        A functional model: ``int64 [B, L]`` token ids (0 = padding, any L) ->
        ``float32 [B, embed_dim]`` unit rows. An all-padding sentence maps to zeros
        (``gru``; the ``graph`` encoder maps it to a constant row). With
        ``config.encoder == "graph"`` the word graph holds only self loops until
        :func:`vse_tf.text.word_graph.initialize_word_graph` (or ``load_weights``) sets it.
        ``minilm`` ignores ``vocabulary`` (its WordPiece ids are the pretrained model's) and
        maps ``[PAD]`` (id 0) positions out of attention and pooling.
    """
    if config.encoder == "graph":
        return _graph_text_tower(config, len(vocabulary) + 2, embed_dim, name)
    if config.encoder == "minilm":
        return _minilm_text_tower(config, embed_dim, name)
    # Any length: training pads to max_length, serving only to the batch's longest sentence.
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    vocabulary_size = len(vocabulary) + 2
    if config.vocabulary_from_word_vectors:
        words = PartlyFrozenEmbedding(vocabulary_size, config.word_dim, name="word_embedding")(tokens)
    else:
        words = layers.Embedding(vocabulary_size, config.word_dim, mask_zero=True, name="word_embedding")(tokens)
    # keras.layers.GRU's weights and outputs; the input projection runs once, outside the loop.
    gru = ProjectedGRU(config.gru_units, name="gru")
    state = layers.Bidirectional(gru, merge_mode="ave", name="bigru")(words) if config.bidirectional else gru(words)
    if config.gru_units != embed_dim:
        state = layers.Dense(embed_dim, name="projection")(state)
    outputs = unit_rows()(state)
    return keras.Model(tokens, outputs, name=name)


def _graph_text_tower(config: TextTowerConfig, vocabulary_size: int, embed_dim: int, name: str) -> keras.Model:
    """Token ids -> graph convolutions over the word graph -> flatten -> projection -> L2."""
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    convolution = WordGraphConvolution(
        vocabulary_size, config.graph_neighbours, config.graph_channels, name="graph_convolution"
    )
    nodes = convolution(tokens)
    # Flattening keeps which word each feature came from (the paper pools, then a dense layer).
    features = layers.Flatten(name="flatten")(nodes)
    projected = layers.Dense(embed_dim, name="projection")(features)
    outputs = unit_rows()(projected)
    return keras.Model(tokens, outputs, name=name)


def _minilm_text_tower(config: TextTowerConfig, embed_dim: int, name: str) -> keras.Model:
    """WordPiece ids -> pretrained MiniLM -> pooling -> projection -> L2; frozen or partly trainable."""
    encoder, _ = build_pretrained_sentence_encoder(
        config.pretrained, config.pretrained_layers or None, PRETRAINED_TEXT_ENCODER, config.pooling
    )
    trains = set_trainable_blocks(encoder, config.trainable_layers)
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    # A frozen encoder runs in inference mode (no dropout) even while the projection trains.
    pooled = encoder(tokens, training=None if trains else False)
    projected = layers.Dense(embed_dim, name="projection")(pooled)
    return keras.Model(tokens, unit_rows()(projected), name=name)


@keras.saving.register_keras_serializable(package="vse_tf")
class PartlyFrozenEmbedding(keras.layers.Layer):
    """A word embedding whose marked rows get no gradient (id 0 is padding, masked).

    ``frozen`` (``float32 [input_dim]``, 1 = fixed) is a non-trainable weight, so the
    checkpoint carries which rows are fixed. The rows are gathered first, so a step costs
    the batch's rows, not the table.

    Call args:
        ids: ``int64 [B, L]``.

    Returns:
        ``float32 [B, L, output_dim]``, masked where ``ids == 0``.
    """

    def __init__(self, input_dim: int, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim), initializer="uniform", name="embeddings"
        )
        self.frozen = self.add_weight(shape=(self.input_dim,), initializer="zeros", trainable=False, name="frozen")
        self.built = True

    def set_frozen_rows(self, rows) -> None:
        """``rows``: ``[input_dim]``, 1 for each row to keep fixed."""
        self.frozen.assign(ops.cast(rows, "float32"))

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        rows = ops.take(self.embeddings, ids, axis=0)
        fixed = ops.expand_dims(ops.take(self.frozen, ids, axis=0), -1)
        return fixed * tf.stop_gradient(rows) + (1.0 - fixed) * rows

    def compute_mask(self, ids, mask=None):
        return ops.not_equal(ids, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim}
