"""Siamese text network and the per-text vectors behind fine-grained labels (Xu et al., ICCS 2019).

Two copies of one text encoder (shared weights: it is one Keras model called twice)
embed two texts; a contrastive loss on their cosine similarity ``s`` pulls texts of the
same category together and pushes texts of different categories below ``margin``:

    loss(pair) = y * (1 - s)^2 + (1 - y) * max(0, s - margin)^2,   y = [same category]

After training, every distinct training text gets its unit siamese vector (written by
``python -m train.siamese`` as ``loss.text_vectors``). Vectors, not a table of labels: a
batch's negatives change every step, and the fine-grained label of any pair (text ``c``,
image ``i``) is ``clip(v_c . v_i, 0, 1)`` with ``v_i`` the vector of image ``i``'s own text,
which the training step computes for the whole ``B x B`` batch with one matmul
(:func:`vse_tf.model.losses.fine_grained_labels`). Storage is ``O(texts)`` instead of
``O(texts x images)``, and the labels need no second network in the training step.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vse_tf.config import SIAMESE_ENCODERS, ExperimentConfig
from vse_tf.data.records import RetrievalSplit
from vse_tf.files import atomic_path
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.text.towers import build_text_tower
from vse_tf.text.word_graph import initialize_word_graph

ENCODER_NAME = "siamese_text_encoder"


class TextVectors:
    """Unit siamese vectors of distinct texts, looked up by the text itself.

    Args:
        texts: ``[N]`` distinct raw texts.
        vectors: ``float32 [N, S]``, row ``n`` for ``texts[n]``.
        metadata: JSON-ready description (config, vocabulary size, ...), saved along.
    """

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, metadata: dict | None = None):
        if len(texts) != len(vectors) or len(set(texts)) != len(texts):
            raise ValueError(f"TextVectors: {len(texts)} texts (must be distinct) for {len(vectors)} vectors")
        self.texts = tuple(texts)
        self.vectors = np.asarray(vectors, np.float32)
        self.metadata = dict(metadata or {})
        self._rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.texts, tf.string), tf.range(len(self.texts), dtype=tf.int64)
            ),
            default_value=-1,
        )
        self._table = tf.constant(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, texts: tf.Tensor) -> tf.Tensor:
        """``tf.string [B]`` -> ``float32 [B, S]``; a text without a vector fails the step."""
        rows = self._rows.lookup(texts)
        check = tf.debugging.assert_non_negative(
            rows, message="vse_tf: a training text has no siamese vector; rerun `python -m train.siamese`"
        )
        with tf.control_dependencies([check]):
            return tf.gather(self._table, rows)

    def check_covers(self, texts: Sequence[str], source: str) -> None:
        """Raises ValueError naming ``source`` when some of ``texts`` have no vector."""
        known = set(self.texts)
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            raise ValueError(
                f"{source}: no siamese vector for {len(missing)} training text(s), e.g. {missing[0]!r}; "
                "it was written for other data: rerun `python -m train.siamese` with this config"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Writes ``texts``, ``vectors`` and ``metadata`` (JSON) to one ``.npz``, atomically."""
        path = Path(path)
        with atomic_path(path) as temporary:
            np.savez(
                temporary,
                texts=np.array(self.texts, dtype=np.str_),
                vectors=self.vectors,
                metadata=np.array(json.dumps(self.metadata)),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextVectors:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no siamese text vectors; run `python -m train.siamese` first")
        try:
            with np.load(path, allow_pickle=False) as archive:
                texts = [str(text) for text in archive["texts"]]
                vectors = archive["vectors"]
                metadata = json.loads(str(archive["metadata"]))
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(f"{path}: not a siamese text vectors file: {error}") from error
        if vectors.ndim != 2:
            raise ValueError(f"{path}: field 'vectors' must be 2-d, got shape {vectors.shape}")
        return cls(texts, vectors, metadata)


def texts_with_categories(split: RetrievalSplit) -> tuple[list[str], list[str]]:
    """Distinct texts of a split and each one's category (its image's; the first seen wins).

    Raises:
        ValueError: some image has no category (the siamese network learns from them).
    """
    categories: dict[str, str] = {}
    for caption, image in zip(split.captions, split.caption_to_image):
        category = split.categories[image]
        if not category:
            raise ValueError(f"image {split.image_refs[image]!r} has no category; siamese labels need one per image")
        categories.setdefault(caption, category)
    return list(categories), list(categories.values())


def contrastive_loss(first: tf.Tensor, second: tf.Tensor, same: tf.Tensor, margin: float) -> tf.Tensor:
    """Mean of ``y (1 - s)^2 + (1 - y) max(0, s - margin)^2`` over pairs.

    Args:
        first: ``float [B, S]`` unit vectors.
        second: ``float [B, S]`` unit vectors.
        same: ``[B]`` 1 where the two texts share a category, else 0.
        margin: see above.
    """
    similarity = tf.reduce_sum(tf.cast(first, tf.float32) * tf.cast(second, tf.float32), axis=-1)
    same = tf.cast(same, tf.float32)
    pull = same * tf.square(1.0 - similarity)
    push = (1.0 - same) * tf.square(tf.nn.relu(similarity - margin))
    return tf.reduce_mean(pull + push)


@keras.saving.register_keras_serializable(package="vse_tf")
class SiameseTextNetwork(keras.Model):
    """One text encoder applied to both texts of a pair (the two "copies" share every weight).

    Batches are ``{"first": int64 [B, L], "second": int64 [B, L], "same": float32 [B]}``.

    Args:
        encoder: ``int64 [B, L] -> [B, S]`` unit rows.
        margin: contrastive margin (see :func:`contrastive_loss`).
    """

    def __init__(self, encoder: keras.Model, margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.margin = float(margin)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    def call(self, inputs, training=False):
        return self.encoder(inputs["first"], training=training), self.encoder(inputs["second"], training=training)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            first, second = self(data, training=True)
            loss = contrastive_loss(first, second, data["same"], self.margin)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply([tf.convert_to_tensor(g) for g in gradients], self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        first, second = self(data, training=False)
        self.loss_tracker.update_state(contrastive_loss(first, second, data["same"], self.margin))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "margin": self.margin,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def sample_pairs(
    categories: Sequence[str], epochs: int, positive_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each epoch and text, one partner: same category with ``positive_fraction``, else another.

    A category with a single text pairs that text with itself as its positive; when every
    text has one category there are no negatives and every pair is positive.

    Returns:
        ``first``, ``second`` (``int64 [epochs * N]`` text indices) and ``same`` (``float32``).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(categories)
    members = {category: np.flatnonzero(labels == category) for category in np.unique(labels)}
    others = {category: np.flatnonzero(labels != category) for category in members}
    firsts, seconds, sames = [], [], []
    for _ in range(epochs):
        first = rng.permutation(len(labels))
        same = rng.random(len(labels)) < positive_fraction
        second = np.empty_like(first)
        for category, rows in members.items():
            here = labels[first] == category
            positive = here & (same | (len(others[category]) == 0))
            second[positive] = rng.choice(rows, size=int(positive.sum()))
            negative = here & ~positive
            if negative.any():
                second[negative] = rng.choice(others[category], size=int(negative.sum()))
            same[here] = positive[here]
        firsts.append(first)
        seconds.append(second)
        sames.append(same.astype(np.float32))
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(sames)


def pair_dataset(
    texts: Sequence[str],
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    tokenizer: SentenceTokenizer,
    batch_size: int,
) -> tf.data.Dataset:
    """Batches ``{"first", "second", "same"}`` of tokenised text pairs (the last partial batch kept)."""
    table = tf.constant(list(texts), tf.string)
    first, second, same = pairs
    dataset = tf.data.Dataset.from_tensor_slices((first, second, same)).batch(batch_size)
    return dataset.map(
        lambda a, b, y: {
            "first": tokenizer(tf.gather(table, a)),
            "second": tokenizer(tf.gather(table, b)),
            "same": y,
        },
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class SiameseResult:
    """A trained siamese network and what it produced."""

    network: SiameseTextNetwork
    tokenizer: SentenceTokenizer
    text_vectors: TextVectors
    history: list[float]


def build_siamese(config: ExperimentConfig, vocabulary: Sequence[str]) -> SiameseTextNetwork:
    """The siamese network: the ``text`` section's encoder (or ``siamese.encoder``) at width ``siamese.embed_dim``."""
    kind = config.siamese.encoder or config.text.encoder
    if kind not in SIAMESE_ENCODERS:
        raise ValueError(
            f"the siamese encoder is trained from scratch: set siamese.encoder to one of {SIAMESE_ENCODERS}"
        )
    text = dataclasses.replace(config.text, encoder=kind)
    encoder = build_text_tower(text, vocabulary, config.siamese.embed_dim, name=ENCODER_NAME)
    return SiameseTextNetwork(encoder, margin=config.siamese.margin, name="siamese_text_network")


def train_siamese(config: ExperimentConfig, train_split: RetrievalSplit, verbose: int = 2) -> SiameseResult:
    """Trains the siamese network on a split's texts and categories; returns it and the text vectors.

    The vocabulary is built from the split's captions with ``text.min_word_count``, as
    :func:`vse_tf.training.trainer.train` does, so both see the same tokens.
    """
    keras.utils.set_random_seed(config.train.seed)
    texts, categories = texts_with_categories(train_split)
    vocabulary = build_vocabulary(train_split.captions, config.text.min_word_count)
    tokenizer = SentenceTokenizer(vocabulary, config.text.max_length)
    network = build_siamese(config, vocabulary)
    if (config.siamese.encoder or config.text.encoder) == "graph":
        initialize_word_graph(network.encoder, train_split.captions, vocabulary)
    settings = config.siamese
    network.compile(optimizer=keras.optimizers.Adam(settings.learning_rate))
    pairs = sample_pairs(categories, settings.epochs, settings.positive_fraction, config.train.seed)
    steps = -(-len(texts) // settings.batch_size)
    history = network.fit(
        pair_dataset(texts, pairs, tokenizer, settings.batch_size).repeat(),
        epochs=settings.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # pairs are drawn at random by sample_pairs
        verbose=verbose,
    )
    vectors = encode_texts(network.encoder, tokenizer, texts)
    metadata = {
        "config": json.loads(config.to_json()),
        "vocabulary_size": len(vocabulary),
        "texts": len(texts),
        "categories": sorted(set(categories)),
    }
    return SiameseResult(network, tokenizer, TextVectors(texts, vectors, metadata), history.history["loss"])


def encode_texts(
    encoder: keras.Model, tokenizer: SentenceTokenizer, texts: Sequence[str], batch_size: int = 1024
) -> np.ndarray:
    """``[N, S]`` unit vectors of ``texts``."""
    batches = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string)).batch(batch_size).map(tokenizer)
    return encoder.predict(batches, verbose=0).astype(np.float32)


def label_separation(vectors: np.ndarray, categories: Sequence[str], max_texts: int = 2000) -> dict[str, float]:
    """Mean fine-grained label ``clip(v_a . v_b, 0, 1)`` of same- and different-category text pairs.

    Over the first ``max_texts`` texts, every pair of distinct texts once.
    """
    vectors = np.asarray(vectors[:max_texts], np.float32)
    labels = np.asarray(categories[:max_texts])
    similarity = np.clip(vectors @ vectors.T, 0.0, 1.0)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return {
        "same_category_label": float(similarity[same & off_diagonal].mean()) if (same & off_diagonal).any() else 0.0,
        "different_category_label": float(similarity[~same].mean()) if (~same).any() else 0.0,
    }
