"""tf.data pipelines: records -> decoded images / features + tokenised captions -> batches.

Training batches are dicts ``{"image": float32 [B, S, S, 3] (or [B, F]),
"tokens": int64 [B, L], "image_id": int64 [B]}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.records import RetrievalSplit
from vse_tf.text import SentenceTokenizer

AUTOTUNE = tf.data.AUTOTUNE


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP bytes -> ``uint8 [S, S, 3]`` (grayscale and alpha become RGB)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    resized = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def image_dataset(split: RetrievalSplit, split_name: str, data: DataConfig, image: ImageTowerConfig) -> tf.data.Dataset:
    """One element per distinct image of the split: ``uint8`` pixels or ``float32`` features."""
    if image.backbone == "features":
        features = load_split_features(data, split_name, split.num_images, image.feature_dim)
        return tf.data.Dataset.from_tensor_slices(features)
    paths = tf.data.Dataset.from_tensor_slices(list(split.image_refs))
    return paths.map(
        lambda path: decode_and_resize(tf.io.read_file(path), image.image_size),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def load_split_features(data: DataConfig, split_name: str, num_images: int, feature_dim: int) -> np.ndarray:
    """Precomputed features ``<features_dir>/<split>_ims.npy``, one row per distinct image."""
    if not data.features_dir:
        raise ValueError("image.backbone='features' needs data.features_dir")
    path = Path(data.features_dir) / f"{split_name}_ims.npy"
    features = np.load(path, mmap_mode="r")
    if features.ndim != 2 or features.shape != (num_images, feature_dim):
        raise ValueError(
            f"{path}: expected shape ({num_images}, {feature_dim}) (images of split {split_name!r} x "
            f"image.feature_dim), got {features.shape}"
        )
    return np.asarray(features, dtype=np.float32)


def as_model_image(value: tf.Tensor) -> tf.Tensor:
    return tf.cast(value, tf.float32)


def training_dataset(split: RetrievalSplit, tokenizer: SentenceTokenizer, config: ExperimentConfig) -> tf.data.Dataset:
    """Shuffled, batched training pairs.

    ``train.sampling == "image"``: each epoch visits every image once with one of its
    captions drawn at random. ``"caption"``: each epoch visits every caption once (an
    image can then appear twice in a batch; the loss masks that pair by ``image_id``).
    Incomplete final batches are dropped so every step sees ``batch_size`` negatives.
    """
    seed = config.train.seed
    images = image_dataset(split, "train", config.data, config.image)
    if config.data.cache_images:
        images = images.cache()
    image_ids = tf.constant(split.image_ids, dtype=tf.int64)
    captions = tf.RaggedTensor.from_value_rowids(
        tf.constant(split.captions, dtype=tf.string),
        tf.constant(split.caption_to_image, dtype=tf.int64),
        nrows=split.num_images,
    )
    per_image = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices((captions, image_ids)))
    per_image = per_image.shuffle(config.train.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if config.train.sampling == "image":
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        pairs = tf.data.Dataset.zip(per_image, draws).map(_pick_caption, num_parallel_calls=AUTOTUNE)
    else:
        pairs = per_image.flat_map(_every_caption).shuffle(
            config.train.shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True
        )
    batches = pairs.batch(config.train.batch_size, drop_remainder=True)
    return batches.map(
        lambda image, caption, image_id: {
            "image": as_model_image(image),
            "tokens": tokenizer(caption),
            "image_id": image_id,
        },
        num_parallel_calls=AUTOTUNE,
    ).prefetch(AUTOTUNE)


def _pick_caption(pair, draw):
    image, (captions, image_id) = pair
    index = tf.math.floormod(draw, tf.cast(tf.shape(captions)[0], tf.int64))
    return image, captions[index], image_id


def _every_caption(image, captions_and_id):
    captions, image_id = captions_and_id
    count = tf.shape(captions, out_type=tf.int64)[0]
    return tf.data.Dataset.from_tensor_slices(
        (tf.repeat(image[None], count, axis=0), captions, tf.fill([count], image_id))
    )


def eval_image_batches(
    split: RetrievalSplit, split_name: str, config: ExperimentConfig, batch_size: int = 256
) -> tf.data.Dataset:
    """The split's distinct images, in order, batched for the image tower."""
    images = image_dataset(split, split_name, config.data, config.image)
    return images.batch(batch_size).map(as_model_image).prefetch(AUTOTUNE)


def eval_caption_batches(
    split: RetrievalSplit, tokenizer: SentenceTokenizer, batch_size: int = 1024
) -> tf.data.Dataset:
    """The split's captions, in order, tokenised for the text tower."""
    captions = tf.data.Dataset.from_tensor_slices(tf.constant(split.captions, dtype=tf.string))
    return captions.batch(batch_size).map(tokenizer).prefetch(AUTOTUNE)
