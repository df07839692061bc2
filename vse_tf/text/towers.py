"""The text tower: a standalone functional Keras model over token ids, built from config.

Token ids ``[B, L]`` -> word embedding -> GRU (or graph convolutions over the word graph) ->
projection -> L2 normalisation. Tokenisation is a separate layer
(:class:`vse_tf.text.tokenizer.SentenceTokenizer`) because Keras ``fit`` under
MirroredStrategy cannot take ``tf.string`` model inputs; the exported text SavedModel puts
the two together.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from vse_tf.config import TextTowerConfig
from vse_tf.layers import unit_rows
from vse_tf.text.word_graph import WordGraphConvolution


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
    """
    if config.encoder == "graph":
        return _graph_text_tower(config, len(vocabulary) + 2, embed_dim, name)
    # Any length: training pads to max_length, serving only to the batch's longest sentence.
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    vocabulary_size = len(vocabulary) + 2
    words = layers.Embedding(vocabulary_size, config.word_dim, mask_zero=True, name="word_embedding")(tokens)
    gru = layers.GRU(config.gru_units, name="gru")
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
