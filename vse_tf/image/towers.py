"""The image tower: a standalone functional Keras model built from config.

Float pixels ``[B, H, W, 3]`` in 0..255 (or precomputed features ``[B, F]``) -> backbone ->
projection -> L2 normalisation. Pixel normalisation lives inside the tower, so the exported
model takes what a client has.

The pretrained backbones (``vgg19``, ``efficientnet_lite0``) are frozen, partly or wholly
trainable by blocks (``image.trainable_layers``, :func:`backbone_blocks`); their trainable
weights (:func:`backbone_variables`) learn at ``image.pretrained_learning_rate_multiplier``
times the rate.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from vse_tf.config import BACKBONE_BLOCKS, ImageTowerConfig
from vse_tf.image.backbones import efficientnet_lite
from vse_tf.layers import unit_rows

# ImageNet channel means (RGB) subtracted by VGG's "caffe" preprocessing.
_VGG_MEAN_RGB = (123.68, 116.779, 103.939)
# The pretrained backbone's sub-model name inside the image tower.
BACKBONE_MODELS = {"vgg19": "vgg19_fc7", "efficientnet_lite0": "efficientnet_lite0_features"}
# VGG-19 up to fc7, bottom to top: the five conv stages (their layers are named blockK_...),
# then fc6 and fc7 (Keras' fc1 and fc2).
_VGG_BLOCKS = ("block1_", "block2_", "block3_", "block4_", "block5_", "fc1", "fc2")


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
    outputs = unit_rows()(projected)
    return keras.Model(inputs, outputs, name=name)


def backbone_variables(image_encoder: keras.Model) -> list:
    """The trainable variables of the tower's pretrained backbone (none when frozen, or for
    ``small_cnn`` / ``features``, which have no pretrained part)."""
    backbones = [layer for layer in image_encoder.layers if layer.name in BACKBONE_MODELS.values()]
    return [variable for backbone in backbones for variable in backbone.trainable_variables]


def backbone_blocks(backbone: str, model: keras.Model) -> list[list[layers.Layer]]:
    """The blocks ``image.trainable_layers`` counts, bottom to top, each as its layers.

    ``vgg19``: the conv stages ``block1`` .. ``block5``, then ``fc1`` and ``fc2`` (7 blocks).
    ``efficientnet_lite0``: the MBConv blocks ``block0`` .. ``block15``, then the head conv
    (17 blocks; the stem and the weightless pooling belong to none).
    """
    if backbone == "vgg19":
        blocks = [[layer for layer in model.layers if layer.name.startswith(prefix)] for prefix in _VGG_BLOCKS]
    elif backbone == "efficientnet_lite0":
        blocks = efficientnet_lite.finetuning_blocks(model)
    else:
        raise ValueError(f"{backbone!r} has no pretrained blocks; one of {tuple(BACKBONE_BLOCKS)}")
    if len(blocks) != BACKBONE_BLOCKS[backbone] or not all(blocks):
        raise ValueError(f"{model.name}: expected {BACKBONE_BLOCKS[backbone]} blocks of {backbone} layers")
    return blocks


def set_trainable_blocks(model: keras.Model, blocks: list[list[layers.Layer]], trainable_layers: int) -> bool:
    """Freezes ``model``, or all but its top ``trainable_layers`` blocks (-1: nothing frozen).

    A frozen ``BatchNormalization`` layer runs in inference mode (Keras: ``trainable=False``),
    so its moving statistics stay as loaded. Returns whether any weight of ``model`` trains.
    """
    if not -1 <= trainable_layers <= len(blocks):
        raise ValueError(f"trainable_layers must be in -1..{len(blocks)}, got {trainable_layers}")
    model.trainable = trainable_layers != 0  # recursive: every layer of model
    if trainable_layers > 0:
        for layer in model.layers:
            layer.trainable = False
        for block in blocks[len(blocks) - trainable_layers :]:
            for layer in block:
                layer.trainable = True
    return trainable_layers != 0


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
    fc7 = keras.Model(vgg.input, vgg.get_layer("fc2").output, name=BACKBONE_MODELS["vgg19"])
    trains = set_trainable_blocks(fc7, backbone_blocks("vgg19", fc7), config.backbone_trainable_layers)
    x = pixels
    if config.image_size != 224:
        x = layers.Resizing(224, 224, name="resize_224")(x)
    x = VGGPreprocess(name="vgg_preprocess")(x)
    return fc7(x, training=None if trains else False)


def _efficientnet_lite0(pixels, config: ImageTowerConfig):
    """EfficientNet-Lite0 up to its 1280-d average pool; weights only from a local file
    (``python -m export.convert_weights efficientnet_lite0``). Resizes to 224 and
    normalises inside."""
    classifier = efficientnet_lite.build_efficientnet_lite0(include_top=True)
    if config.weights:
        classifier.load_weights(config.weights)
    pooled = classifier.get_layer(efficientnet_lite.POOLED_LAYER).output
    backbone = keras.Model(classifier.input, pooled, name=BACKBONE_MODELS["efficientnet_lite0"])
    trains = set_trainable_blocks(
        backbone, backbone_blocks("efficientnet_lite0", backbone), config.backbone_trainable_layers
    )
    x = pixels
    if config.image_size != efficientnet_lite.IMAGE_SIZE:
        size = efficientnet_lite.IMAGE_SIZE
        x = layers.Resizing(size, size, name=f"resize_{size}")(x)
    # A frozen backbone runs in inference mode (BatchNorm on its moving statistics) even
    # while the projection trains; a partly trainable one passes `training` on, and its
    # frozen BatchNorm layers keep inference mode on their own.
    return backbone(x, training=None if trains else False)


_BACKBONES = {"small_cnn": _small_cnn, "vgg19": _vgg19, "efficientnet_lite0": _efficientnet_lite0}
