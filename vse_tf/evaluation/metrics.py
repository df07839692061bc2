"""Retrieval metrics: vectorised, chunked, pure NumPy.

Ranks count from 0 (0 = the right answer came first). Ties count against the query: a
negative that scores exactly as high as the positive is ranked above it, so a collapsed
model (every embedding the same) scores zero, not 100%. Positives and negatives come from
the same matrix product, so no tolerance decides a rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vse_tf.evaluation.querybank import DEFAULT_BETA, NORMALISATIONS, querybank_normalised
from vse_tf.progress import progress_bar

RECALL_KS = (1, 5, 10)
# Scores held at once by a chunk: 2**24 float32 = 64 MB (plus as many booleans).
_CHUNK_SCORES = 2**24
METRIC_KEYS = tuple(
    [f"i2t_r{k}" for k in RECALL_KS]
    + ["i2t_medr", "i2t_meanr"]
    + [f"t2i_r{k}" for k in RECALL_KS]
    + ["t2i_medr", "t2i_meanr", "rsum"]
)


def retrieval_ranks(
    image_embeddings: np.ndarray,
    caption_embeddings: np.ndarray,
    caption_to_image: Sequence[int] | np.ndarray,
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the right answer for every query, in both directions, exactly.

    An image's rank (image annotation, image -> text) is the number of other images'
    captions scoring at least as high as its best own caption. A caption's rank (image
    search, text -> image) is the number of other images scoring at least as high as its
    own image. Scores are dot products of the float32 embeddings, compared as exact
    numbers (no tolerance); exact ties count against the query.

    The positives (each caption with its own image) are computed in float64 first. Then
    captions are processed ``chunk_size`` at a time as one float32 ``[N, chunk]`` product:
    a float32 score further from a positive than the float32 rounding bound
    (:func:`_rounding_bounds`) is on the same side of it as the exact score, and the few
    scores within the bound (near-ties) are recomputed in float64. Memory is
    ``O(N * chunk_size)``, never ``O(N * M)``, and no score matrix is sorted.

    Args:
        image_embeddings: ``[N, D]``.
        caption_embeddings: ``[M, D]``.
        caption_to_image: ``[M]`` index of each caption's image in ``image_embeddings``;
            any number of captions per image, at least one each.
        chunk_size: captions per chunk; default: as many as keep one chunk's scores
            within 64 MB (at least 256).
        progress: show a progress bar on stderr.

    Returns:
        ``(image_ranks [N], caption_ranks [M])``, int64.
    """
    images = np.asarray(image_embeddings, dtype=np.float32)
    captions = np.asarray(caption_embeddings, dtype=np.float32)
    owner = np.asarray(caption_to_image, dtype=np.int64)
    _check_shapes(images, captions, owner)
    chunk_size = chunk_size or max(256, _CHUNK_SCORES // max(1, images.shape[0]))
    starts = range(0, len(owner), chunk_size)
    chunks = [slice(start, min(start + chunk_size, len(owner))) for start in starts]
    with progress_bar(len(chunks), "ranking captions", "chunks", progress) as update:
        return _chunked_ranks(images, captions, owner, chunks, update)


def _chunked_ranks(
    images: np.ndarray, captions: np.ndarray, owner: np.ndarray, chunks: list[slice], update
) -> tuple[np.ndarray, np.ndarray]:
    num_images = images.shape[0]
    own = _exact_dots(images, captions, owner, np.arange(len(owner)))  # [M] float64
    best = np.full(num_images, -np.inf)
    np.maximum.at(best, owner, own)
    image_error, caption_error = _rounding_bounds(images, captions)
    image_low, image_high = _outward(best - image_error, best + image_error)
    image_ranks = np.zeros(num_images, dtype=np.int64)
    caption_ranks = np.zeros(len(owner), dtype=np.int64)
    for done, chunk in enumerate(chunks, start=1):
        scores = images @ captions[chunk].T  # [N, chunk] float32
        chunk_owner = owner[chunk]
        # A float32 score above (below) the band around an exact positive is above (below) it
        # exactly; scores inside the band are recomputed in float64.
        caption_low, caption_high = _outward(own[chunk] - caption_error[chunk], own[chunk] + caption_error[chunk])
        caption_ranks[chunk] = _ranks_of_columns(
            images, captions, scores, chunk, chunk_owner, own[chunk], caption_low, caption_high
        )
        image_ranks += _ranks_of_rows(images, captions, scores, chunk, chunk_owner, best, image_low, image_high)
        update(done)
    return image_ranks, caption_ranks


def _ranks_of_columns(images, captions, scores, chunk, chunk_owner, own, low, high) -> np.ndarray:
    """Caption side: images other than its own scoring at least the caption's own score."""
    above = _count(scores > high[None, :], axis=0)
    # Each column's band holds its own image; a column with more holds near-ties.
    uncertain = _count(scores >= low[None, :], axis=0) - above > 1
    if not uncertain.any():
        return above
    band = (scores >= low[None, :]) & (scores <= high[None, :]) & uncertain[None, :]
    band[chunk_owner, np.arange(len(chunk_owner))] = False  # a caption's own image is no rival
    rows, cols = np.nonzero(band)
    exact = _exact_dots(images, captions, rows, chunk.start + cols)
    return above + np.bincount(cols[exact >= own[cols]], minlength=len(chunk_owner))


def _ranks_of_rows(images, captions, scores, chunk, chunk_owner, best, low, high) -> np.ndarray:
    """Image side, this chunk's share: other images' captions scoring at least the image's best."""
    above = _count(scores > high[:, None], axis=1)  # own captions are never above the band
    own_scores = scores[chunk_owner, np.arange(len(chunk_owner))]
    own_in_band = np.bincount(chunk_owner[own_scores >= low[chunk_owner]], minlength=len(best))
    uncertain = np.flatnonzero(_count(scores >= low[:, None], axis=1) - above > own_in_band)
    if not uncertain.size:
        return above
    part = scores[uncertain]  # rows: a cheap copy
    band = (part >= low[uncertain, None]) & (part <= high[uncertain, None])
    band &= chunk_owner[None, :] != uncertain[:, None]  # own captions are no rivals
    which, cols = np.nonzero(band)
    rows = uncertain[which]
    exact = _exact_dots(images, captions, rows, chunk.start + cols)
    return above + np.bincount(rows[exact >= best[rows]], minlength=len(best))


def _count(mask: np.ndarray, axis: int) -> np.ndarray:
    """``np.count_nonzero(mask, axis)``, summed as bytes (twice as fast for large masks)."""
    return mask.view(np.uint8).sum(axis=axis, dtype=np.int64)


def _exact_dots(images: np.ndarray, captions: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``images[rows[k]] . captions[cols[k]]`` in float64 (products of float32 are exact there)."""
    dots = np.empty(len(rows), dtype=np.float64)
    block = max(1, 2**24 // max(1, images.shape[1]))  # 128 MB of float64 rows at a time
    for start in range(0, len(rows), block):
        part = slice(start, start + block)
        dots[part] = np.einsum("kd,kd->k", images[rows[part]], captions[cols[part]], dtype=np.float64)
    return dots


def _rounding_bounds(images: np.ndarray, captions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``([N], [M])``: how far a float32 ``image . caption`` can be from the exact value, at most.

    Any summation order of a length-``d`` float32 dot product is within
    ``gamma_d * |x| |y|`` of the exact value (``gamma_d = d u / (1 - d u)``, ``u = 2**-24``;
    Higham, Accuracy and Stability of Numerical Algorithms, 3.1). Per image with the
    largest caption norm, per caption with the largest image norm; widened a little for
    the float64 arithmetic around it.
    """
    dim = images.shape[1]
    unit_roundoff = 2.0**-24
    gamma = dim * unit_roundoff / (1.0 - dim * unit_roundoff)
    # float32 norms are within a few ulps; the 1e-4 widening covers them.
    image_norms = np.sqrt(np.einsum("nd,nd->n", images, images, dtype=np.float64)) * (1.0 + 1e-4)
    caption_norms = np.sqrt(np.einsum("md,md->m", captions, captions, dtype=np.float64)) * (1.0 + 1e-4)
    tiny = np.finfo(np.float32).tiny
    return (
        gamma * image_norms * float(caption_norms.max(initial=0.0)) + tiny,
        gamma * caption_norms * float(image_norms.max(initial=0.0)) + tiny,
    )


def _outward(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds (so comparing with float32 scores copies nothing), rounded outwards."""
    return (
        np.nextafter(low.astype(np.float32), np.float32(-np.inf)),
        np.nextafter(high.astype(np.float32), np.float32(np.inf)),
    )


def recall_metrics(image_ranks: np.ndarray, caption_ranks: np.ndarray) -> dict[str, float]:
    """R@1/5/10 (percent), median rank and mean rank (1-based), and rsum, VSE++ style."""
    metrics: dict[str, float] = {}
    for prefix, ranks in (("i2t", image_ranks), ("t2i", caption_ranks)):
        for k in RECALL_KS:
            metrics[f"{prefix}_r{k}"] = float(100.0 * np.mean(ranks < k))
        metrics[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
        metrics[f"{prefix}_meanr"] = float(np.mean(ranks) + 1)
    metrics["rsum"] = float(sum(metrics[f"{prefix}_r{k}"] for prefix in ("i2t", "t2i") for k in RECALL_KS))
    return metrics


def evaluate_retrieval(
    image_embeddings: np.ndarray,
    caption_embeddings: np.ndarray,
    caption_to_image: Sequence[int] | np.ndarray,
    *,
    folds: int = 1,
    chunk_size: int | None = None,
    progress: bool = False,
    normalise: str = "none",
    image_bank: np.ndarray | None = None,
    caption_bank: np.ndarray | None = None,
    beta: float = DEFAULT_BETA,
) -> dict[str, float]:
    """Recall@K both ways, with keys :data:`METRIC_KEYS`.

    Args:
        image_embeddings: ``[N, D]``, one row per distinct image.
        caption_embeddings: ``[M, D]``.
        caption_to_image: ``[M]`` row of each caption's image.
        folds: cut the images into this many consecutive, equal folds (with their
            captions), evaluate each alone and average the metrics: ``folds=5`` on the
            COCO 5K test split is the COCO 1K protocol. The averaged rsum equals the mean
            of the folds' rsums.
        chunk_size: see :func:`retrieval_ranks`.
        progress: show a progress bar.
        normalise: ``"none"``, or ``"qb"``: querybank normalisation (inverted softmax,
            :mod:`vse_tf.evaluation.querybank`) of the scores, which discounts hubs.
        image_bank: ``"qb"``: ``[Q1, D]`` image queries (training images) that normalise
            the captions' scores for annotation.
        caption_bank: ``"qb"``: ``[Q2, D]`` caption queries (training captions) that
            normalise the images' scores for image search.
        beta: ``"qb"``: inverse temperature of the inverted softmax.

    Returns:
        ``i2t_*`` is image annotation (image -> text), ``t2i_*`` image search
        (text -> image); R@K in percent, medr = floor(median rank) + 1,
        meanr = mean rank + 1, rsum = the sum of the six R@K.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    if normalise == "qb":
        if image_bank is None or caption_bank is None:
            raise ValueError('normalise="qb" needs an image_bank and a caption_bank (e.g. the training split)')
        for name, values in (("image_bank", image_bank), ("caption_bank", caption_bank)):
            _check_finite(np.asarray(values), name)
        _check_finite(np.asarray(image_embeddings), "image")
        _check_finite(np.asarray(caption_embeddings), "caption")
        image_embeddings, caption_embeddings = querybank_normalised(
            image_embeddings, caption_embeddings, image_bank, caption_bank, beta
        )
    if folds == 1:
        return recall_metrics(
            *retrieval_ranks(image_embeddings, caption_embeddings, caption_to_image, chunk_size, progress)
        )
    images = np.asarray(image_embeddings)
    captions = np.asarray(caption_embeddings)
    owner = np.asarray(caption_to_image, dtype=np.int64)
    if folds < 1 or len(images) % folds:
        raise ValueError(f"folds={folds} must divide the {len(images)} images into equal folds")
    fold_size = len(images) // folds
    per_fold = []
    for fold in range(folds):
        in_fold = owner // fold_size == fold
        ranks = retrieval_ranks(
            images[fold * fold_size : (fold + 1) * fold_size],
            captions[in_fold],
            owner[in_fold] - fold * fold_size,
            chunk_size,
            progress,
        )
        per_fold.append(recall_metrics(*ranks))
    return {key: float(np.mean([metrics[key] for metrics in per_fold])) for key in METRIC_KEYS}


def average_precision(scores: np.ndarray, relevant: np.ndarray, at: int | None = None) -> np.ndarray:
    """Average precision of each query row over its ranked items.

    Items are ranked by decreasing score; among equal scores the irrelevant ones rank
    first (ties count against the query). ``AP = sum_k P@k * rel_k / (number of relevant
    items)``, the sum over all ranks, or over the first ``at`` ranks and divided by the
    relevant items found there (the MAP@R of the cross-modal literature). A query with
    no relevant item scores 0.

    Args:
        scores: ``[Q, N]``.
        relevant: ``bool [Q, N]``.
        at: cut-off R, or ``None`` for all items.

    Returns:
        ``float64 [Q]`` in [0, 1].
    """
    order = np.lexsort((relevant, -scores), axis=-1)
    ranked = np.take_along_axis(relevant, order, axis=-1)
    if at is not None:
        ranked = ranked[:, :at]
    hits = np.cumsum(ranked, axis=-1)
    precision = hits / np.arange(1, ranked.shape[1] + 1)
    found = hits[:, -1] if ranked.shape[1] else np.zeros(len(ranked))
    summed = np.sum(precision * ranked, axis=-1)
    return np.divide(summed, found, out=np.zeros(len(ranked)), where=found > 0)


def mean_average_precision(
    queries: np.ndarray,
    items: np.ndarray,
    query_categories: Sequence | np.ndarray,
    item_categories: Sequence | np.ndarray,
    at: int | None = None,
    chunk_size: int | None = None,
) -> float:
    """MAP of ranking ``items`` by dot product for each query; relevant = same category.

    Queries are processed in chunks so that memory stays ``O(chunk * items)``.
    """
    queries = np.asarray(queries, dtype=np.float32)
    items = np.asarray(items, dtype=np.float32)
    query_labels, item_labels = _category_codes(query_categories, item_categories)
    if len(query_labels) != len(queries) or len(item_labels) != len(items):
        raise ValueError(
            f"need one category per row: {len(queries)} queries / {len(query_labels)} categories, "
            f"{len(items)} items / {len(item_labels)} categories"
        )
    chunk_size = chunk_size or max(1, _CHUNK_SCORES // 4 // max(1, len(items)))
    total = 0.0
    for start in range(0, len(queries), chunk_size):
        stop = start + chunk_size
        scores = queries[start:stop] @ items.T
        relevant = query_labels[start:stop, None] == item_labels[None, :]
        total += float(np.sum(average_precision(scores, relevant, at)))
    return total / max(1, len(queries))


def evaluate_map(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    image_categories: Sequence | np.ndarray,
    text_categories: Sequence | np.ndarray,
    at: int | None = None,
) -> dict[str, float]:
    """MAP both ways for category-labelled sets (Wikipedia, TVGraz, Corel1k style).

    Every image and every text has a category; a retrieved item is relevant when its
    category matches the query's.

    Args:
        image_embeddings: ``[N, D]``.
        text_embeddings: ``[M, D]``.
        image_categories: ``[N]`` labels (any hashable values, e.g. strings).
        text_categories: ``[M]`` labels.
        at: also report MAP@R for this R.

    Returns:
        ``i2t_map``, ``t2i_map``, ``mean_map`` (MAP over all retrieved items, in [0, 1]),
        and with ``at``: ``i2t_map_at_R``, ``t2i_map_at_R``, ``mean_map_at_R``.
    """
    metrics = {}
    for suffix, cutoff in [("", None)] + ([(f"_at_{at}", at)] if at else []):
        i2t = mean_average_precision(image_embeddings, text_embeddings, image_categories, text_categories, cutoff)
        t2i = mean_average_precision(text_embeddings, image_embeddings, text_categories, image_categories, cutoff)
        metrics[f"i2t_map{suffix}"] = i2t
        metrics[f"t2i_map{suffix}"] = t2i
        metrics[f"mean_map{suffix}"] = (i2t + t2i) / 2
    return metrics


def _check_shapes(images: np.ndarray, captions: np.ndarray, owner: np.ndarray) -> None:
    if images.ndim != 2 or captions.ndim != 2 or images.shape[1] != captions.shape[1]:
        raise ValueError(f"embeddings must be [N, D] and [M, D], got {images.shape} and {captions.shape}")
    if owner.shape != (captions.shape[0],):
        raise ValueError(f"caption_to_image must have one entry per caption ({captions.shape[0]}), got {owner.shape}")
    if owner.size and (owner.min() < 0 or owner.max() >= images.shape[0]):
        raise ValueError(f"caption_to_image must index the {images.shape[0]} images")
    _check_finite(images, "image")
    _check_finite(captions, "caption")
    without_captions = np.setdiff1d(np.arange(images.shape[0]), owner)
    if without_captions.size:
        raise ValueError(f"{without_captions.size} image(s) have no caption, e.g. row {without_captions[0]}")


def _check_finite(values: np.ndarray, name: str) -> None:
    bad_rows = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"{bad_rows.size} {name} embedding(s) are not finite (NaN or inf), e.g. row {bad_rows[0]}")


def _category_codes(first: Sequence | np.ndarray, second: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label lists as integer codes of one shared vocabulary."""
    first, second = list(first), list(second)
    _, codes = np.unique(np.array([str(label) for label in first + second]), return_inverse=True)
    return codes[: len(first)], codes[len(first) :]
