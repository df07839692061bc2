"""The two towers: standalone functional Keras models built from config.

Image tower: float pixels ``[B, H, W, 3]`` in 0..255 (or features ``[B, F]``) ->
backbone -> projection -> L2 normalisation. Text tower: token ids ``[B, L]`` ->
word embedding -> GRU -> L2 normalisation. Pixel normalisation lives inside the image
tower, so the exported model takes what a client has; tokenisation is a separate layer
(:class:`vse_tf.text.SentenceTokenizer`) because Keras ``fit`` under MirroredStrategy
cannot take ``tf.string`` model inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from vse_tf.backbones import efficientnet_lite
from vse_tf.config import ImageTowerConfig, TextTowerConfig
from vse_tf.graph_text import WordGraphConvolution

# ImageNet channel means (RGB) subtracted by VGG's "caffe" preprocessing.
_VGG_MEAN_RGB = (123.68, 116.779, 103.939)


@keras.saving.register_keras_serializable(package="vse_tf")
class L2Normalize(layers.Layer):
    """Scales each row to unit length; an all-zero row stays zero (no NaN).

    Computes in float32 even under a mixed precision policy: the embeddings leave the
    tower as float32 unit rows.
    """

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        squared_norm = ops.sum(ops.square(inputs), axis=-1, keepdims=True)
        return inputs * ops.rsqrt(ops.maximum(squared_norm, self.epsilon))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="vse_tf")
class VGGPreprocess(layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet mean, as keras.applications.vgg19 expects."""

    def call(self, pixels):
        bgr = ops.flip(pixels, axis=-1)
        mean_bgr = ops.convert_to_tensor(_VGG_MEAN_RGB[::-1], dtype=pixels.dtype)
        return bgr - mean_bgr


def build_image_tower(config: ImageTowerConfig, embed_dim: int, name: str = "image_encoder") -> keras.Model:
    """Builds the image tower.

    Args:
        config: backbone choice and its settings.
        embed_dim: width of the joint space.

    Returns:
        A functional model: ``float32 [B, S, S, 3]`` pixels in 0..255 (``[B, F]`` for the
        ``features`` backbone) -> ``float32 [B, embed_dim]`` unit rows.
    """
    if config.backbone == "features":
        inputs = keras.Input(shape=(config.feature_dim,), name="features")
        features = inputs
    else:
        inputs = keras.Input(shape=(config.image_size, config.image_size, 3), name="pixels")
        features = _BACKBONES[config.backbone](inputs, config)
    if config.dropout:
        features = layers.Dropout(config.dropout, name="dropout")(features)
    projected = layers.Dense(embed_dim, name="projection")(features)
    outputs = L2Normalize(name="l2_normalize")(projected)
    return keras.Model(inputs, outputs, name=name)


def _small_cnn(pixels, config: ImageTowerConfig):
    """A few conv stages; the final feature map is flattened so positions survive."""
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(pixels)
    for stage, filters in enumerate(config.cnn_filters):
        for conv in range(config.cnn_convs_per_stage):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=config.batchnorm_momentum, name=f"stage{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    return layers.Flatten(name="flatten")(x)


def _vgg19(pixels, config: ImageTowerConfig):
    """VGG-19 up to fc7 (4096-d), as in the paper; weights only from a local file."""
    vgg = keras.applications.VGG19(include_top=True, weights=None, input_shape=(224, 224, 3), classes=1000)
    if config.weights:
        vgg.load_weights(config.weights)
    fc7 = keras.Model(vgg.input, vgg.get_layer("fc2").output, name="vgg19_fc7")
    fc7.trainable = config.finetune
    x = pixels
    if config.image_size != 224:
        x = layers.Resizing(224, 224, name="resize_224")(x)
    x = VGGPreprocess(name="vgg_preprocess")(x)
    return fc7(x, training=False if not config.finetune else None)


def _efficientnet_lite0(pixels, config: ImageTowerConfig):
    """EfficientNet-Lite0 up to its 1280-d average pool; weights only from a local file
    (``python -m export.convert_weights efficientnet_lite0``). Resizes to 224 and
    normalises inside."""
    classifier = efficientnet_lite.build_efficientnet_lite0(include_top=True)
    if config.weights:
        classifier.load_weights(config.weights)
    pooled = classifier.get_layer(efficientnet_lite.POOLED_LAYER).output
    backbone = keras.Model(classifier.input, pooled, name="efficientnet_lite0_features")
    backbone.trainable = config.finetune
    x = pixels
    if config.image_size != efficientnet_lite.IMAGE_SIZE:
        size = efficientnet_lite.IMAGE_SIZE
        x = layers.Resizing(size, size, name=f"resize_{size}")(x)
    return backbone(x, training=False if not config.finetune else None)


_BACKBONES = {"small_cnn": _small_cnn, "vgg19": _vgg19, "efficientnet_lite0": _efficientnet_lite0}


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
        :func:`vse_tf.graph_text.initialize_word_graph` (or ``load_weights``) sets it.
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
    outputs = L2Normalize(name="l2_normalize")(state)
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
    outputs = L2Normalize(name="l2_normalize")(projected)
    return keras.Model(tokens, outputs, name=name)
