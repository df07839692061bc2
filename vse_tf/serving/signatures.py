"""Serving signatures: a tower wrapped with its preprocessing, as TF Serving calls it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS
from vse_tf.serving.decoding import decode_for_serving
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
    image_encoder: keras.Model, config: ExperimentConfig, max_image_pixels: int = MAX_IMAGE_PIXELS
) -> ServingModel:
    """Encoded images (and float pixels) -> unit embeddings; features for that backbone."""
    if config.image.backbone == "features":
        dim = config.image.feature_dim

        @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32, name="features")])
        def serve_features(features):
            return {"embeddings": image_encoder(features, training=False)}

        return ServingModel(
            name=IMAGE_ENCODER_NAME,
            tracked=(image_encoder,),
            signatures={"serving_default": serve_features},
            warmup_inputs={"serving_default": {"features": np.zeros((1, dim), np.float32)}},
            limits={"feature_dim": dim},
            description=f"Precomputed {dim}-d image features in, unit embeddings out.",
        )
    size = config.image.image_size

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_images(images):
        pixels = tf.map_fn(
            lambda encoded: decode_for_serving(encoded, size, max_image_pixels),
            images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        )
        return {"embeddings": image_encoder(tf.cast(pixels, tf.float32), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        already_sized = tf.reduce_all(tf.equal(tf.shape(pixels)[1:3], size))
        resized = tf.cond(
            already_sized,
            lambda: tf.ensure_shape(pixels, [None, size, size, 3]),
            lambda: tf.image.resize(pixels, [size, size], antialias=True),
        )
        return {"embeddings": image_encoder(tf.clip_by_value(tf.round(resized), 0.0, 255.0), training=False)}

    sample = tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(128, tf.uint8))).numpy()
    return ServingModel(
        name=IMAGE_ENCODER_NAME,
        tracked=(image_encoder,),
        signatures={"serving_default": serve_images, "pixels": serve_pixels},
        warmup_inputs={
            "serving_default": {"images": np.array([sample], dtype=object)},
            "pixels": {"pixels": np.full((1, size, size, 3), 128.0, np.float32)},
        },
        limits={"image_size": size, "max_image_pixels": max_image_pixels},
        description=(
            f"Encoded JPEG/PNG/GIF/BMP bytes (any size up to {max_image_pixels} pixels; grayscale and alpha "
            f"become RGB) or float RGB pixels 0..255 of any size, resized to {size}x{size}; unit embeddings out. "
            "Other bytes give InvalidArgument."
        ),
    )
