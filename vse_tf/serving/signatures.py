"""Serving signatures: a tower wrapped with its preprocessing, as TF Serving calls it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.data.image_facts import MAX_BATCH_PIXELS, MAX_IMAGE_PIXELS
from vse_tf.serving.decoding import decode_batch_for_serving
from vse_tf.text.tokenizer import SentenceTokenizer
from vse_tf.text.wordpiece import WordPieceTokenizer

IMAGE_ENCODER_NAME = "image_encoder"
TEXT_ENCODER_NAME = "text_encoder"
WARMUP_SENTENCES = ("a small red circle left of a big blue star", "")


@dataclasses.dataclass(frozen=True)
class ServingModel:
    """What one export needs: the objects to track, its signatures and its sample requests."""

    name: str
    tracked: tuple  # Keras layers/models, or one tf.Module holding everything
    signatures: dict[str, Callable]
    warmup_inputs: dict[str, dict[str, np.ndarray]]
    limits: dict[str, int]
    description: str


def text_serving_model(tokenizer: SentenceTokenizer | WordPieceTokenizer, text_encoder: keras.Model) -> ServingModel:
    """Raw sentences -> unit embeddings (tokenizer and encoder in one graph)."""
    serving_tokenizer = type(tokenizer).from_config({**tokenizer.get_config(), "pad_to_longest": True})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve_sentences(sentences):
        return {"embeddings": text_encoder(serving_tokenizer(sentences), training=False)}

    return ServingModel(
        name=TEXT_ENCODER_NAME,
        tracked=(serving_tokenizer, text_encoder),
        signatures={"serving_default": serve_sentences},
        warmup_inputs={"serving_default": {"sentences": np.array(WARMUP_SENTENCES, dtype=object)}},
        limits={"max_length": tokenizer.max_length},
        description=_text_description(tokenizer),
    )


def _text_description(tokenizer: SentenceTokenizer | WordPieceTokenizer) -> str:
    """What the text signature does to a sentence, for the model card."""
    if isinstance(tokenizer, WordPieceTokenizer):
        return (
            "Sentences in, unit embeddings out. BERT WordPiece tokenisation in the graph (as the original "
            "all-MiniLM-L6-v2 tokenizer: control characters dropped, accents stripped, lower-cased, punctuation "
            f"and CJK ideographs split), [CLS] ... [SEP], truncated to {tokenizer.max_length} ids; pretrained "
            "MiniLM encoder, pooling, projection, L2 normalisation. Needs the TF Text ops NormalizeUTF8 and "
            "WordpieceTokenizeWithOffsets (stock TF Serving links them)."
        )
    return (
        "Sentences in, unit embeddings out. Lower-cased, punctuation (ASCII and Unicode) removed, "
        "Chinese/Japanese (Han, Hiragana, Katakana) characters one token each, split on white "
        f"space, truncated to {tokenizer.max_length} tokens; unknown words map to one OOV id; an empty "
        "or blank sentence (no words after this) is read as the one unknown word [UNK], so every row is a "
        "unit vector (the same one for every such sentence)."
    )


def image_serving_model(
    image_encoder: keras.Model,
    config: ExperimentConfig,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_batch_pixels: int = MAX_BATCH_PIXELS,
    feature_backbone: keras.Model | None = None,
    background: tuple[int, ...] | None = None,
) -> ServingModel:
    """Encoded images (and float pixels) -> unit embeddings.

    For a run trained on precomputed features (``image.backbone == "features"``),
    ``feature_backbone`` is the network that made them (``float32 [B, S, S, 3]`` ->
    ``[B, F]``): it goes in front of the trained tower, so the export takes image bytes
    like any other, and a ``features`` signature keeps the trained tower alone. Without it
    the export takes only features. ``background`` overrides ``image.background`` (the
    features' own record says which one made them).
    """
    background = tuple(config.image.background if background is None else background)
    if config.image.backbone != "features":
        return _pixel_serving_model(
            image_encoder, config.image.image_size, max_image_pixels, max_batch_pixels, background, {}
        )
    dim = config.image.feature_dim

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32, name="features")])
    def serve_features(features):
        return {"embeddings": _encode(image_encoder, features)}

    features_warmup = {"features": np.zeros((1, dim), np.float32)}
    if feature_backbone is None:
        return ServingModel(
            name=IMAGE_ENCODER_NAME,
            tracked=(image_encoder,),
            signatures={"serving_default": serve_features},
            warmup_inputs={"serving_default": features_warmup},
            limits={"feature_dim": dim},
            description=f"Precomputed {dim}-d image features in, unit embeddings out.",
        )
    size = int(feature_backbone.input.shape[1])
    pixels = keras.Input(shape=(size, size, 3), name="pixels")
    composed = keras.Model(pixels, image_encoder(feature_backbone(pixels)), name="image_encoder_with_backbone")
    extra = {
        "features": (serve_features, features_warmup, f"or its backbone's {dim}-d features (signature `features`)")
    }
    return _pixel_serving_model(composed, size, max_image_pixels, max_batch_pixels, background, extra)


def _pixel_serving_model(
    image_encoder: keras.Model,
    size: int,
    max_image_pixels: int,
    max_batch_pixels: int,
    background: tuple[int, ...],
    extra: dict[str, tuple[Callable, dict[str, np.ndarray], str]],
) -> ServingModel:
    """``serving_default`` (encoded bytes) and ``pixels`` signatures of a pixels-in tower, plus ``extra``."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_images(images):
        pixels = decode_batch_for_serving(images, size, max_image_pixels, max_batch_pixels, background)
        return {"embeddings": _encode(image_encoder, tf.cast(pixels, tf.float32))}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        finite = tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(pixels)),
            ["vse_tf: pixels must be finite RGB values in 0..255; the request holds NaN or Inf"],
        )
        with tf.control_dependencies([finite]):
            pixels = tf.identity(pixels)
        already_sized = tf.reduce_all(tf.equal(tf.shape(pixels)[1:3], size))
        resized = tf.cond(
            already_sized,
            lambda: tf.ensure_shape(pixels, [None, size, size, 3]),
            lambda: tf.image.resize(pixels, [size, size], antialias=True),
        )
        return {"embeddings": _encode(image_encoder, tf.clip_by_value(tf.round(resized), 0.0, 255.0))}

    sample = tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(128, tf.uint8))).numpy()
    signatures = {"serving_default": serve_images, "pixels": serve_pixels}
    warmup = {
        "serving_default": {"images": np.array([sample], dtype=object)},
        "pixels": {"pixels": np.full((1, size, size, 3), 128.0, np.float32)},
    }
    also = ""
    for name, (function, inputs, description) in extra.items():
        signatures[name], warmup[name], also = function, inputs, f" {description}"
    return ServingModel(
        name=IMAGE_ENCODER_NAME,
        tracked=(image_encoder,),
        signatures=signatures,
        warmup_inputs=warmup,
        limits={"image_size": size, "max_image_pixels": max_image_pixels, "max_batch_pixels": max_batch_pixels},
        description=(
            f"Encoded JPEG/PNG/GIF/BMP bytes (any size up to {max_image_pixels} pixels in one raster, "
            f"{max_batch_pixels} in a request; grayscale becomes RGB, transparency is composited onto RGB "
            f"{background}) or float RGB pixels 0..255 of any size, resized to {size}x{size}{also}; unit "
            "embeddings out. Other bytes, and NaN or Inf pixels, give InvalidArgument."
        ),
    )


def _encode(encoder: keras.Model, inputs: tf.Tensor) -> tf.Tensor:
    """``encoder(inputs)``, and ``float32 [0, D]`` for an empty batch (batch norm on zero rows fails)."""
    width = int(encoder.output.shape[-1])
    return tf.cond(
        tf.shape(inputs)[0] > 0,
        lambda: tf.cast(encoder(inputs, training=False), tf.float32),
        lambda: tf.zeros([0, width], tf.float32),
    )
