"""tf.data pipelines: records -> decoded images / features + tokenised captions -> batches.

Training batches are dicts ``{"image": float32 [B, S, S, 3] (or [B, F]),
"tokens": int64 [B, L], "image_id": int64 [B]}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS
from vse_tf.data.images import WHITE, read_image
from vse_tf.data.readers.precomp import is_row_ref, load_feature_rows
from vse_tf.data.readers.tfrecord import ShardedSplit, shard_image_dataset, streamed_training_images
from vse_tf.data.records import RetrievalSplit
from vse_tf.data.service import distribute_to_service
from vse_tf.image.feature_record import check_features_match
from vse_tf.text.tokenizer import SentenceTokenizer

if TYPE_CHECKING:
    from vse_tf.model.siamese import TextVectors

AUTOTUNE = tf.data.AUTOTUNE
_EPOCH_GRAPH_SEED = 87654321


def decode_and_resize(
    encoded: tf.Tensor, image_size: int, background: tuple[int, ...] = WHITE, max_pixels: int = MAX_IMAGE_PIXELS
) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP bytes -> ``uint8 [S, S, 3]``: the one reader,
    :func:`vse_tf.data.images.read_image` (gray to RGB, transparency onto ``background``)."""
    return read_image(encoded, image_size, background, max_pixels)


def image_dataset(split: RetrievalSplit, split_name: str, data: DataConfig, image: ImageTowerConfig) -> tf.data.Dataset:
    """One element per distinct image of the split: ``uint8`` pixels or ``float32`` features."""
    if data.format == "tfrecord":  # the pixels are in the shards, in the split's order
        images = shard_image_dataset(data, split_name, image, decode_and_resize).take(split.num_images)
        return images.apply(tf.data.experimental.assert_cardinality(split.num_images))
    if image.backbone == "features":
        return tf.data.Dataset.from_tensor_slices(split_features(split, split_name, data, image))
    paths = tf.data.Dataset.from_tensor_slices(list(split.image_refs))
    return paths.map(
        lambda path: decode_and_resize(
            tf.io.read_file(path), image.image_size, image.background, data.max_image_pixels
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,  # embeddings must stay aligned with the split's images
    )


def split_features(split: RetrievalSplit, split_name: str, data: DataConfig, image: ImageTowerConfig) -> np.ndarray:
    """``float32 [N, F]`` for the split's images: rows named by ``path.npy#row`` refs (the
    ``precomp`` format), else ``<features_dir>/<split>_ims.npy`` with one row per image,
    refused when the folder's ``features.json`` names other images or another image config
    (:func:`vse_tf.image.feature_record.check_features_match`)."""
    if split.image_refs and all(is_row_ref(ref) for ref in split.image_refs):
        return load_feature_rows(split.image_refs, image.feature_dim)
    if data.features_dir:
        check_features_match(data.features_dir, split_name, split.image_ids, image.feature_dim, image.background)
    return load_split_features(data, split_name, split.num_images, image.feature_dim)


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


def training_dataset(
    split: RetrievalSplit,
    tokenizer: SentenceTokenizer,
    config: ExperimentConfig,
    text_vectors: TextVectors | None = None,
    tracker: DecodeTracker | None = None,
    epoch: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Shuffled, batched training pairs.

    ``train.sampling == "image"``: each epoch visits every image once with one of its
    captions drawn at random. ``"caption"``: each epoch visits every caption once (an
    image can then appear twice in a batch; the loss masks that pair by ``image_id``).
    Incomplete final batches are dropped so every step sees ``batch_size`` negatives;
    an iteration yields exactly ``pairs // batch_size`` batches.
    With ``text_vectors`` (fine-grained labels) each batch also holds
    ``"text_vector": float32 [B, S]``, the siamese vector of each caption; with
    ``loss.kind == "category"``, ``"category_id": int64 [B]`` (see :func:`category_table`).
    Captions are padded to the batch's longest (see :func:`batch_tokenizer`).
    Images that fail to decode are dropped (see :func:`training_images`) and marked in
    ``tracker``. ``data.deterministic`` fixes the element order (with the seeds, the same
    batches every run). Epoch ``e``'s order derives from ``train.seed`` and ``e`` only;
    each iteration is the next epoch of the int64 variable ``epoch`` (a new one from 0 when
    omitted), which a resumed run sets to its epoch (``SyncDataEpoch``).
    """
    images = training_images(split, config, tracker)
    categories = category_table(split) if config.loss.kind == "category" else None
    tokenizer = batch_tokenizer(tokenizer, config)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False) if epoch is None else epoch
    # Each iteration reads (and advances) the epoch number; the order derives from it.
    numbers = tf.data.Dataset.range(1).map(lambda _: epoch.assign_add(1) - 1)
    return (
        numbers.flat_map(
            lambda number: _epoch_batches(images, number, split, tokenizer, config, text_vectors, categories)
        )
        .apply(tf.data.experimental.assert_cardinality(_pairs(split, config) // config.train.batch_size))
        .with_options(_options(config.data))
    )


def _epoch_batches(images, number, split, tokenizer, config, text_vectors, categories) -> tf.data.Dataset:
    """One epoch's batches, shuffled from ``(train.seed, number)`` alone: a resumed run sees the same."""
    # The op seed is a tensor; TF compares the seed pair with (0, 0) in Python, which fails
    # for a tensor when the graph seed is 0, so this function's graph gets a fixed nonzero one.
    tf.random.set_seed(_EPOCH_GRAPH_SEED)
    seed = config.train.seed * 1_000_003 + number * 2
    per_image = images.shuffle(config.train.shuffle_buffer, seed=seed)
    if config.train.sampling == "image":
        draws = tf.data.Dataset.random(seed=seed)
        pairs = tf.data.Dataset.zip(per_image, draws).map(_pick_caption, num_parallel_calls=AUTOTUNE)
    else:
        pairs = per_image.flat_map(_every_caption).shuffle(config.train.shuffle_buffer, seed=seed + 1)
    batches = sort_by_caption_length(_full_batches(pairs, config), tokenizer, config.train.length_sort_window, seed + 2)
    batches = batches.map(
        lambda image, caption, image_id: {
            "image": as_model_image(image),
            "tokens": tokenizer(caption),
            "image_id": image_id,
            **({} if text_vectors is None else {"text_vector": text_vectors.lookup(caption)}),
            **({} if categories is None else {"category_id": categories.lookup(image_id)}),
        },
        num_parallel_calls=AUTOTUNE,
    ).prefetch(AUTOTUNE)
    return _exactly_steps(batches, split, config)


def _full_batches(pairs: tf.data.Dataset, config: ExperimentConfig) -> tf.data.Dataset:
    """``pairs`` in batches of ``train.batch_size``, the incomplete last one dropped.

    With ``data.service`` each worker batches the pieces the dispatcher handed it, so each
    ends its share with a short batch; the trainer re-slices the workers' batches into full
    ones, and an epoch loses only its global remainder, as without the service.
    """
    size = config.train.batch_size
    if not config.data.service:
        return pairs.batch(size, drop_remainder=True)
    return distribute_to_service(pairs.batch(size), config.data).rebatch(size, drop_remainder=True)


def sort_by_caption_length(
    batches: tf.data.Dataset, tokenizer: SentenceTokenizer, window: int, seed: int | tf.Tensor
) -> tf.data.Dataset:
    """``train.length_sort_window``: batches of ``(image, caption, image_id)`` regrouped so
    that each holds captions of about one length.

    Each run of ``window`` consecutive batches (the last run may be shorter) is pooled, its
    pairs sorted by token count (stable: equal lengths keep their shuffled order), cut into
    batches of the same size again and emitted in an order shuffled from ``(seed, run)``.
    Whole batches are pooled, so the pairs, and the number and size of the batches, stay
    those of ``batches``. ``window`` 0 or 1 returns ``batches`` unchanged.
    """
    if window <= 1:
        return batches
    seed = tf.cast(seed, tf.int64)

    def regroup(run, pooled):
        count = tf.shape(pooled[1], out_type=tf.int64)[0]
        size = pooled[1].shape[1]
        flat = [tf.reshape(part, [-1, *part.shape[2:]]) for part in pooled]
        lengths = tf.math.count_nonzero(tokenizer(flat[1]), axis=1)
        order = tf.argsort(lengths, stable=True)
        regrouped = [tf.reshape(tf.gather(part, order), [-1, size, *part.shape[1:]]) for part in flat]
        shuffled = tf.random.experimental.stateless_shuffle(tf.range(count), seed=tf.stack([seed, run]))
        return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(part, shuffled) for part in regrouped))

    return batches.batch(window).enumerate().flat_map(regroup)


def batch_tokenizer(tokenizer: SentenceTokenizer, config: ExperimentConfig) -> SentenceTokenizer:
    """The training tokenizer: pads each batch only to its longest caption (masking makes the
    text tower's output the same, in fewer GRU steps or attention positions; a
    :class:`~vse_tf.text.wordpiece.WordPieceTokenizer` works the same way); under XLA, to ``max_length``, because
    every new sequence length would compile the step again."""
    if config.train.jit_compile or tokenizer.pad_to_longest:
        return tokenizer
    return type(tokenizer).from_config({**tokenizer.get_config(), "pad_to_longest": True})


def category_table(split: RetrievalSplit) -> tf.lookup.StaticHashTable:
    """Dataset image id -> index of the image's category (category names in sorted order).

    Raises:
        ValueError: a training image has no category (the message names one).
    """
    missing = [ref for ref, category in zip(split.image_refs, split.categories) if not category]
    if missing:
        raise ValueError(
            f"loss.kind='category' needs a category for every training image; {missing[0]} "
            f"(and {len(missing) - 1} more) has none"
        )
    index = {name: position for position, name in enumerate(sorted(set(split.categories)))}
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(split.image_ids, dtype=tf.int64),
            tf.constant([index[category] for category in split.categories], dtype=tf.int64),
        ),
        default_value=-1,
    )


def training_images(
    split: RetrievalSplit, config: ExperimentConfig, tracker: DecodeTracker | None = None
) -> tf.data.Dataset:
    """One element per distinct image: ``(uint8 [S, S, 3] or float32 [F], (captions tf.string [n], image_id))``.

    The safety net: decoding runs on whole elements followed by ``ignore_errors``, so a
    file the screening let through but TensorFlow cannot decode loses its element (image
    and captions together) instead of ending the epoch; ``tracker`` marks every image
    that got through, so the lost ones can be named. Decoded images are cached when
    ``data.cache_images`` is set and their estimated size fits ``data.cache_budget_mb``.
    A :class:`ShardedSplit` streams from its shards instead (no cache, no tracker).
    """
    if isinstance(split, ShardedSplit):
        return streamed_training_images(split, config, decode_and_resize)
    image_ids = tf.constant(split.image_ids, dtype=tf.int64)
    order = np.argsort(split.caption_to_image, kind="stable")  # row ids must be sorted (COCO's are not)
    captions = tf.RaggedTensor.from_value_rowids(
        tf.constant(np.asarray(split.captions, dtype=object)[order].tolist(), dtype=tf.string),
        tf.constant(np.asarray(split.caption_to_image, dtype=np.int64)[order]),
        nrows=split.num_images,
    )
    if config.image.backbone == "features":
        features = split_features(split, "train", config.data, config.image)
        return tf.data.Dataset.from_tensor_slices((features, (captions, image_ids)))
    size, background, max_pixels = config.image.image_size, config.image.background, config.data.max_image_pixels
    positions = tf.range(split.num_images, dtype=tf.int64)
    elements = tf.data.Dataset.from_tensor_slices((list(split.image_refs), positions, (captions, image_ids)))
    decoded = elements.map(
        lambda path, position, rest: (
            decode_and_resize(tf.io.read_file(path), size, background, max_pixels),
            position,
            rest,
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=config.data.deterministic,
    ).ignore_errors()
    if tracker is not None:
        decoded = decoded.map(tracker.mark, num_parallel_calls=AUTOTUNE, deterministic=config.data.deterministic)
    images = decoded.map(lambda image, position, rest: (image, rest))
    if cache_decision(split, config)[0]:
        images = images.cache()
    return images


def _exactly_steps(epoch: tf.data.Dataset, split: RetrievalSplit, config: ExperimentConfig) -> tf.data.Dataset:
    """Exactly ``pairs // batch_size`` batches per iteration, a known cardinality for Keras.

    Should the safety net drop images, the missing batches come from a fresh (reshuffled)
    pass; the first pass is still read to its end (the prefetch drains it), so the cache
    and the decode tracker see every image.
    """
    steps = _pairs(split, config) // config.train.batch_size
    exact = epoch.repeat().take(steps).apply(tf.data.experimental.assert_cardinality(steps))  # shards: unknown
    return exact.with_options(_options(config.data))


def _pairs(split: RetrievalSplit, config: ExperimentConfig) -> int:
    return split.num_images if config.train.sampling == "image" else split.num_captions


def cache_decision(split: RetrievalSplit, config: ExperimentConfig) -> tuple[bool, str]:
    """Whether the decoded training images are cached, and a line saying why.

    The estimate is ``images x S x S x 3`` bytes (uint8) against ``data.cache_budget_mb``.
    Precomputed features are in memory already and never cached.
    """
    if isinstance(split, ShardedSplit):
        return False, "image cache: off, the training split streams from its shards"
    if config.data.service:
        return False, "image cache: off, the tf.data service workers decode every epoch"
    if config.image.backbone == "features":
        return False, "image cache: not needed (precomputed features are in memory)"
    if not config.data.cache_images:
        return False, "image cache: off (data.cache_images=false)"
    size = config.image.image_size
    estimate_mb = split.num_images * size * size * 3 / 2**20
    if estimate_mb > config.data.cache_budget_mb:
        return False, (
            f"image cache: off, {split.num_images} decoded images need about {estimate_mb:.0f} MiB "
            f"> data.cache_budget_mb={config.data.cache_budget_mb}; decoding every epoch"
        )
    return True, f"image cache: on, {split.num_images} decoded images, about {estimate_mb:.0f} MiB"


class DecodeTracker:
    """Which training images got through decoding; :meth:`failed` names the others.

    Holds a ``bool [N]`` variable set by the training pipeline as images pass; read it
    after the first epoch (every image has been decoded once by then).
    """

    def __init__(self, image_refs: tuple[str, ...]) -> None:
        self.image_refs = tuple(image_refs)
        self.seen = tf.Variable(tf.zeros([len(self.image_refs)], tf.bool), trainable=False, name="decoded_images")

    def mark(self, image: tf.Tensor, position: tf.Tensor, rest):
        with tf.control_dependencies([self.seen.scatter_nd_update(position[None, None], [True])]):
            return tf.identity(image), position, rest

    def failed(self) -> list[str]:
        """The images never decoded so far."""
        return [ref for ref, seen in zip(self.image_refs, self.seen.numpy()) if not seen]


def _options(data: DataConfig) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = data.deterministic
    return options


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
