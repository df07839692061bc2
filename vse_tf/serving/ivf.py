"""An inverted-file (IVF) index of core TensorFlow ops, servable by stock TF Serving.

A coarse quantiser (spherical k-means centroids trained on a sample of the gallery)
splits the gallery into ``nlist`` lists. The lists are stored as a CSR layout of constant
tensors: the vectors sorted by list (``float32 [N, D]``, or ``int8 [N, D]`` with one
``float32`` scale per row), ``offsets int64 [nlist + 1]`` where list ``l`` holds the
positions ``offsets[l] .. offsets[l + 1]``, and the ids in the same order. A query scores
the centroids, takes the top ``nprobe`` lists, gathers their rows, scores them exactly
(int8 rows dequantised to float32) and keeps the top ``k``.

The graph needs only core ops (MatMul, TopKV2, GatherV2, RaggedRange, ...), no ScaNN or
other custom kernels; the model card lists them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

KMEANS_ITERATIONS = 10
KMEANS_SAMPLE_PER_LIST = 32
INT8_LEVELS = 127.0


@dataclasses.dataclass(frozen=True)
class IvfParams:
    """Settings of a core-TF IVF index.

    Attributes:
        nlist: number of inverted lists (k-means centroids); 0 picks ``4 * sqrt(N)``.
        nprobe: lists searched per query when a request does not say.
        k: results per query when a request does not say.
        quantize: ``none`` (float32 rows) or ``int8`` (one scale per dimension, 4x smaller).
        seed: k-means sample and initialisation.
    """

    nlist: int = 0
    nprobe: int = 32
    k: int = 10
    quantize: str = "none"
    seed: int = 0

    def __post_init__(self):
        if self.quantize not in ("none", "int8"):
            raise ValueError(f"ivf quantize must be 'none' or 'int8', got {self.quantize!r}")
        if self.nlist < 0 or self.nprobe < 1 or self.k < 1:
            raise ValueError(f"ivf nlist must be >= 0 and nprobe, k >= 1, got {self}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> IvfParams:
        return cls(**values)


def default_nlist(count: int) -> int:
    """``4 * sqrt(N)`` lists (the usual IVF rule), at least 1 and at most N."""
    return int(max(1, min(count, round(4 * np.sqrt(count)))))


def spherical_kmeans(
    vectors: np.ndarray, clusters: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0
) -> np.ndarray:
    """Unit centroids maximising the summed dot product of each vector with its centroid.

    Args:
        vectors: ``float32 [M, D]`` unit rows, ``M >= clusters``.
        clusters: number of centroids.

    Returns:
        ``float32 [clusters, D]`` unit rows. Seeded by k-means++ on a subsample of
        ``8 * clusters`` vectors; a cluster that empties is re-seeded with the vector its
        centroid explains worst.
    """
    rng = np.random.default_rng(seed)
    vectors = np.asarray(vectors, np.float32)
    centroids = kmeans_plus_plus(
        vectors[rng.choice(len(vectors), min(len(vectors), 8 * clusters), replace=False)], clusters, rng
    )
    for _ in range(iterations):
        assignment, best = _nearest(vectors, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, vectors)
        counts = np.bincount(assignment, minlength=clusters)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            worst = np.argsort(best)[: len(empty)]
            sums[empty] = vectors[worst]
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def kmeans_plus_plus(vectors: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds ``[clusters, D]``: each next seed drawn with probability ~ its squared
    distance (``2 - 2 cos`` for unit rows) to the nearest seed so far."""
    seeds = np.empty((clusters, vectors.shape[1]), np.float32)
    seeds[0] = vectors[rng.integers(len(vectors))]
    distance = np.maximum(2.0 - 2.0 * (vectors @ seeds[0]), 0.0)
    for index in range(1, clusters):
        total = distance.sum()
        chosen = rng.choice(len(vectors), p=distance / total) if total > 0 else rng.integers(len(vectors))
        seeds[index] = vectors[chosen]
        distance = np.minimum(distance, np.maximum(2.0 - 2.0 * (vectors @ seeds[index]), 0.0))
    return seeds


def assign_to_lists(vectors: np.ndarray, centroids: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """The list (nearest centroid by dot product) of each row: ``int32 [N]``."""
    lists = np.empty(len(vectors), np.int32)
    for start in range(0, len(vectors), chunk):
        lists[start : start + chunk] = _nearest(vectors[start : start + chunk], centroids)[0]
    return lists


def _nearest(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors @ centroids.T
    assignment = np.argmax(scores, axis=1)
    return assignment.astype(np.int32), scores[np.arange(len(vectors)), assignment]


def train_coarse_quantizer(embeddings: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """k-means centroids ``float32 [nlist, D]`` from a sample of ``32 * nlist`` gallery rows."""
    rng = np.random.default_rng(seed)
    sample_size = min(len(embeddings), KMEANS_SAMPLE_PER_LIST * nlist)
    sample = embeddings[np.sort(rng.choice(len(embeddings), sample_size, replace=False))]
    return spherical_kmeans(sample, nlist, seed=seed)


@dataclasses.dataclass(frozen=True)
class IvfLayout:
    """The CSR layout the SavedModel holds.

    Attributes:
        centroids: ``float32 [nlist, D]``.
        offsets: ``int64 [nlist + 1]``; list ``l`` is positions ``offsets[l]:offsets[l+1]``.
        rows: ``int64 [N]``: the gallery row (position in ``ids.json``) at each position.
        vectors: ``float32 [N, D]``, or ``int8 [N, D]`` when quantised.
        scales: ``float32 [D]`` dequantisation scale per dimension; empty when not quantised.
    """

    centroids: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    vectors: np.ndarray
    scales: np.ndarray

    @property
    def quantized(self) -> bool:
        return self.vectors.dtype == np.int8


def build_layout(embeddings: np.ndarray, centroids: np.ndarray, lists: np.ndarray, quantize: str) -> IvfLayout:
    """Sorts the gallery by list into the CSR layout.

    Args:
        embeddings: ``float32 [N, D]`` in gallery (id) order.
        centroids: ``float32 [nlist, D]``.
        lists: ``int32 [N]``, the list of each row.
        quantize: ``none`` or ``int8``.
    """
    rows = np.argsort(lists, kind="stable").astype(np.int64)
    counts = np.bincount(lists, minlength=len(centroids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ordered = np.asarray(embeddings, np.float32)[rows]
    if quantize == "int8":
        vectors, scales = quantize_int8(ordered)
    else:
        vectors, scales = ordered, np.zeros(0, np.float32)
    return IvfLayout(np.asarray(centroids, np.float32), offsets, rows, vectors, scales)


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-dimension int8: ``vectors ~= codes * scales[None, :]``.

    One scale per dimension (its largest magnitude over the gallery / 127) keeps the
    precision of the small dimensions, which a per-row scale would spend on the largest;
    and a query is scaled once (``(q * scales) . codes``) instead of each row.

    Returns:
        ``(codes int8 [N, D], scales float32 [D])``.
    """
    scales = np.max(np.abs(vectors), axis=0) / INT8_LEVELS if len(vectors) else np.ones(vectors.shape[1])
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(vectors / scales[None, :]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return codes, scales


class IvfSearch(tf.Module):
    """The IVF query path as a ``tf.Module``; its constants become the SavedModel's variables.

    ``search(embeddings [B, D], nprobe [], k []) -> {"ids": string [B, k], "scores": float32
    [B, k]}``, best first; a query whose probed lists hold fewer than ``k`` rows gets ``""``
    ids with score ``-inf`` in the remaining places.
    """

    def __init__(self, layout: IvfLayout, ids_in_layout_order: list[str], name: str = "ivf"):
        super().__init__(name=name)
        self.centroids = tf.Variable(layout.centroids, trainable=False, name="centroids")
        self.offsets = tf.Variable(layout.offsets, trainable=False, name="offsets")
        self.vectors = tf.Variable(layout.vectors, trainable=False, name="vectors")
        self.scales = tf.Variable(layout.scales, trainable=False, name="scales")
        self.ids = tf.Variable(ids_in_layout_order, trainable=False, name="ids", dtype=tf.string)
        self.quantized = layout.quantized

    def rank(self, queries: tf.Tensor, nprobe: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-``k`` of the rows in the ``nprobe`` lists nearest each query (graph code)."""
        queries = tf.convert_to_tensor(queries, tf.float32)
        # int8 rows: the per-dimension scales move onto the query, so rows are only cast.
        scaled_queries = queries * self.scales if self.quantized else queries
        nlist = tf.shape(self.centroids)[0]
        nprobe = tf.clip_by_value(tf.cast(nprobe, tf.int32), 1, nlist)
        probes = tf.math.top_k(tf.matmul(queries, self.centroids, transpose_b=True), k=nprobe).indices
        starts = tf.gather(self.offsets, probes)
        limits = tf.gather(self.offsets, probes + 1)
        # One ragged row of candidate positions per query: its probed lists back to back.
        positions = tf.RaggedTensor.from_row_lengths(
            tf.ragged.range(tf.reshape(starts, [-1]), tf.reshape(limits, [-1])).flat_values,
            tf.reduce_sum(limits - starts, axis=1),
        )
        candidates = tf.gather(self.vectors, positions.flat_values)
        candidates = tf.cast(candidates, tf.float32)
        query_rows = tf.gather(scaled_queries, positions.value_rowids())
        flat_scores = tf.reduce_sum(candidates * query_rows, axis=1)
        k = tf.maximum(tf.cast(k, tf.int32), 0)
        # At least k columns, so that the answer is [B, k] even when the lists hold fewer rows.
        width = tf.maximum(tf.reduce_max(positions.row_lengths()), tf.cast(k, tf.int64))
        shape = tf.stack([tf.shape(queries, out_type=tf.int64)[0], width])
        scores = positions.with_flat_values(flat_scores).to_tensor(default_value=float("-inf"), shape=shape)
        padded_positions = positions.to_tensor(default_value=-1, shape=shape)
        best = tf.math.top_k(scores, k=k)
        chosen = tf.gather(padded_positions, best.indices, batch_dims=1)
        ids = tf.where(chosen >= 0, tf.gather(self.ids, tf.maximum(chosen, 0)), tf.constant(""))
        return {"ids": ids, "scores": best.values}
