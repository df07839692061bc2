"""Search with querybank normalisation (inverted softmax) over any index backend.

The normalised score of query ``q`` and gallery item ``g`` ranks as ``s(q, g) - offset(g)``,
``offset(g) = logsumexp_b(beta s(b, g)) / beta`` over a bank of queries like the real ones
(:mod:`vse_tf.evaluation.querybank`): an index of training captions for image search, one
of training images for annotation. The exact backend ranks the whole gallery so; an
approximate backend's own top ``candidates`` are re-ranked (their offsets computed alone).
"""

from __future__ import annotations

import numpy as np

from vse_tf.evaluation.querybank import DEFAULT_BETA, querybank_offsets
from vse_tf.serving.index import top_k
from vse_tf.serving.index_store import SearchIndex


def default_candidates(k: int) -> int:
    """Items an approximate backend returns for re-ranking: ``max(10 k, 100)``."""
    return max(10 * k, 100)


def querybank_search(
    index: SearchIndex,
    queries: np.ndarray,
    k: int,
    bank: np.ndarray,
    beta: float = DEFAULT_BETA,
    nprobe: int | None = None,
    candidates: int | None = None,
) -> tuple[list[list[str]], np.ndarray]:
    """Top-``k`` ids per query by the normalised score, best first.

    Args:
        index: a loaded index version (any backend).
        queries: ``float32 [Q, D]`` unit rows.
        k: results per query.
        bank: ``float32 [B, D]`` bank queries (the query tower's embeddings of training data).
        beta: inverse temperature of the inverted softmax.
        nprobe: as :meth:`SearchIndex.search` (approximate backends).
        candidates: approximate backends: items re-ranked per query (default :func:`default_candidates`).

    Returns:
        ``(ids, scores float32 [Q, k])``; scores are ``s(q, g) - offset(g)``. Rows that
        reached fewer than ``k`` items end in ``""`` with score ``-inf``.
    """
    queries = np.asarray(queries, np.float32)
    bank = np.asarray(bank, np.float32)
    if bank.ndim != 2 or bank.shape[1] != index.dim:
        raise ValueError(f"querybank: bank of shape {bank.shape}, the index {index.directory} has dim {index.dim}")
    gallery = index.gallery.embeddings
    if index.backend == "exact":
        offsets = querybank_offsets(bank, gallery, beta)
        return _ranked_by_offset(index, queries, np.arange(len(gallery)), offsets, k)
    found, _ = index.search(queries, candidates or default_candidates(k), nprobe)
    row_of = {item: row for row, item in enumerate(index.gallery.ids)}
    reached = sorted({row_of[item] for line in found for item in line if item})
    offsets = dict(zip(reached, querybank_offsets(bank, gallery[reached], beta))) if reached else {}
    ids, scores = [], np.full([len(queries), k], -np.inf, np.float32)
    for position, line in enumerate(found):
        rows = np.array([row_of[item] for item in line if item], np.int64)
        if not len(rows):
            ids.append([""] * k)
            continue
        line_ids, line_scores = _ranked_by_offset(
            index, queries[position : position + 1], rows, np.array([offsets[row] for row in rows]), k
        )
        ids.append(line_ids[0])
        scores[position] = line_scores[0]
    return ids, scores


def _ranked_by_offset(
    index: SearchIndex, queries: np.ndarray, rows: np.ndarray, offsets: np.ndarray, k: int
) -> tuple[list[list[str]], np.ndarray]:
    """Top ``k`` of ``rows`` by ``q . g - offset``: the exact ranking of augmented vectors ``[q, 1] . [g, -offset]``."""
    augmented_queries = np.hstack([queries, np.ones([len(queries), 1], np.float32)])
    augmented_gallery = np.hstack([index.gallery.embeddings[rows], -offsets[:, None]]).astype(np.float32)
    reach = min(k, len(rows))
    positions, scores = top_k(augmented_queries, augmented_gallery, reach)
    ids = [[index.gallery.ids[rows[p]] for p in line] + [""] * (k - reach) for line in positions]
    padded = np.full([len(queries), k], -np.inf, np.float32)
    padded[:, :reach] = scores
    return ids, padded
