"""Arithmetic on the learned space: image vector - text vector + text vector.

``query(run, image, minus="red", plus="blue", gallery=...)`` builds
``normalise(image_vector - text_vector("red") + text_vector("blue"))`` and returns the
nearest gallery images. :func:`attribute_swap_rate` measures it on the embedded shapes
dataset: how often the top image has the swapped attribute, beside the chance rate.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from vse_tf.data.pipeline import decode_and_resize
from vse_tf.data.synthetic.shapes import COLOURS, SHAPES
from vse_tf.evaluation.encode import EncodedSplit
from vse_tf.serving.index import top_k
from vse_tf.training.run import Run


def text_vectors(run: Run, texts: Sequence[str]) -> np.ndarray:
    """Unit embeddings of short texts (single words work) from the run's text tower."""
    return run.model.text_encoder.predict(run.tokenizer(tf.constant(list(texts))), verbose=0)


def image_vector(run: Run, encoded: bytes) -> np.ndarray:
    """Unit embedding ``[D]`` of one encoded image."""
    pixels = decode_and_resize(tf.constant(encoded), run.config.image.image_size)
    return run.model.image_encoder.predict(tf.cast(pixels[None], tf.float32), verbose=0)[0]


def combine(image_embeddings: np.ndarray, minus: np.ndarray, plus: np.ndarray) -> np.ndarray:
    """``normalise(image - minus + plus)`` row by row."""
    shifted = np.asarray(image_embeddings, np.float32) - minus + plus
    return shifted / np.maximum(np.linalg.norm(shifted, axis=-1, keepdims=True), 1e-12)


def query(
    run: Run, image: bytes, minus: str, plus: str, gallery: np.ndarray, gallery_ids: Sequence[str], k: int = 5
) -> list[tuple[str, float]]:
    """The ``k`` gallery images nearest to ``image - text(minus) + text(plus)``, with scores."""
    minus_vector, plus_vector = text_vectors(run, [minus, plus])
    combined = combine(image_vector(run, image)[None], minus_vector, plus_vector)
    rows, scores = top_k(combined, gallery, k)
    return [(gallery_ids[row], float(score)) for row, score in zip(rows[0], scores[0])]


@dataclasses.dataclass(frozen=True)
class SwapResult:
    """Outcome of one kind of attribute swap over a split."""

    attribute: str
    queries: int
    success_rate: float
    chance_rate: float


def scene_objects(description: str) -> list[tuple[str, str, str]]:
    """``"small red circle | left of | big blue star"`` -> ``[(size, colour, shape), ...]``."""
    parts = description.split(" | ")
    objects = [parts[0]] + ([parts[2]] if len(parts) == 3 else [])
    return [tuple(part.split(" ")) for part in objects]


def attribute_swap_rate(
    run: Run, encoded: EncodedSplit, descriptions: Sequence[str], attribute: str, max_queries: int = 2000
) -> SwapResult:
    """:func:`swap_rate` with the run's text tower embedding the attribute words."""
    values = list(COLOURS) if attribute == "colour" else list(SHAPES)
    word_vectors = dict(zip(values, text_vectors(run, values)))
    return swap_rate(encoded.image_embeddings, descriptions, word_vectors, attribute, max_queries)


def swap_rate(
    image_embeddings: np.ndarray,
    descriptions: Sequence[str],
    word_vectors: dict[str, np.ndarray],
    attribute: str,
    max_queries: int = 2000,
) -> SwapResult:
    """Swaps one attribute word of each image's first object and checks the top result.

    For every image and every other value of ``attribute`` (``colour`` or ``shape``), the
    query is ``image - text(old) + text(new)``; it succeeds when the nearest *other* image
    holds an object with the new value and the first object's other attribute. The chance
    rate is the share of images holding such an object, averaged over the same queries.
    """
    if attribute not in ("colour", "shape"):
        raise ValueError(f"attribute must be 'colour' or 'shape', got {attribute!r}")
    values = list(word_vectors)
    position = 1 if attribute == "colour" else 2
    keep = 2 if attribute == "colour" else 1
    objects = [scene_objects(text) for text in descriptions]
    pairs = [
        (image, new)
        for image, new in itertools.product(range(len(objects)), values)
        if new != objects[image][0][position]
    ][:max_queries]
    holders: dict[tuple[str, str], np.ndarray] = {}

    def holding(new: str, kept: str) -> np.ndarray:
        """Which images hold an object with ``new`` and the kept attribute ``kept``."""
        if (new, kept) not in holders:
            holders[new, kept] = np.array(
                [any(obj[position] == new and obj[keep] == kept for obj in scene) for scene in objects]
            )
        return holders[new, kept]

    successes = chances = 0.0
    for image, new in pairs:
        first = objects[image][0]
        combined = combine(image_embeddings[image][None], word_vectors[first[position]], word_vectors[new])
        scores = (combined @ image_embeddings.T)[0]
        scores[image] = -np.inf  # the query image itself does not count
        target = holding(new, first[keep])
        successes += bool(target[int(np.argmax(scores))])
        chances += (target.sum() - target[image]) / (len(objects) - 1)
    count = max(1, len(pairs))
    return SwapResult(attribute, len(pairs), 100.0 * successes / count, 100.0 * chances / count)
