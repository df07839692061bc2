"""Retrieval metrics: vectorised, chunked, pure NumPy.

Ranks count from 0 (0 = the right answer came first). Ties count against the query: a
negative that scores *equal* to the positive (on the image side, within a relative 1e-6)
is ranked above it, so a collapsed model (every embedding the same) scores zero, not 100%.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vse_tf.progress import Progress

RECALL_KS = (1, 5, 10)
_TIE_TOLERANCE = 1e-6
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
    """Rank of the right answer for every query, in both directions.

    An image's rank (image annotation, image -> text) is the number of other images'
    captions scoring at least as high as its best own caption. A caption's rank (image
    search, text -> image) is the number of other images scoring at least as high as its
    own image. Scores are dot products. Captions are processed ``chunk_size`` at a time,
    so memory is ``O(N * chunk_size)``, never ``O(N * M)``, and no score matrix is sorted.

    Args:
        image_embeddings: ``[N, D]``.
        caption_embeddings: ``[M, D]``.
        caption_to_image: ``[M]`` index of each caption's image in ``image_embeddings``;
            any number of captions per image, at least one each.
        chunk_size: captions per chunk; default: as many as keep one chunk's scores
            within 64 MB (at least 256).
        progress: print a progress line to stderr.

    Returns:
        ``(image_ranks [N], caption_ranks [M])``, int64.
    """
    images = np.asarray(image_embeddings, dtype=np.float32)
    captions = np.asarray(caption_embeddings, dtype=np.float32)
    owner = np.asarray(caption_to_image, dtype=np.int64)
    _check_shapes(images, captions, owner)
    num_images, num_captions = images.shape[0], len(owner)
    chunk_size = chunk_size or max(256, _CHUNK_SCORES // max(1, num_images))
    starts = range(0, num_captions, chunk_size)
    # Each image's best own-caption score. Computed apart from the chunked matmul, it can
    # differ from it by rounding, so "at least as high" is judged with a tolerance.
    best_positive = np.full(num_images, -np.inf, dtype=np.float32)
    for start in starts:
        block = slice(start, start + chunk_size)
        positives = np.einsum("md,md->m", images[owner[block]], captions[block])
        np.maximum.at(best_positive, owner[block], positives)
    threshold = (best_positive - _TIE_TOLERANCE * (1.0 + np.abs(best_positive)))[:, None]

    image_ranks = np.zeros(num_images, dtype=np.int64)
    caption_ranks = np.empty(num_captions, dtype=np.int64)
    tracker = Progress(len(starts), "ranking captions", progress)
    for done, start in enumerate(starts):
        stop = min(start + chunk_size, num_captions)
        scores = images @ captions[start:stop].T  # [N, chunk]
        chunk_owner = owner[start:stop]
        own_scores = scores[chunk_owner, np.arange(stop - start)]
        # Image side: captions reaching the image's best score, minus its own captions.
        image_ranks += np.count_nonzero(scores >= threshold, axis=1)
        image_ranks -= np.bincount(chunk_owner[own_scores >= threshold[chunk_owner, 0]], minlength=num_images)
        # Caption side: images scoring at least its own image's score, minus that image.
        caption_ranks[start:stop] = np.count_nonzero(scores >= own_scores, axis=0) - 1
        tracker.update(done + 1)
    return image_ranks, caption_ranks


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
        progress: print progress to stderr.

    Returns:
        ``i2t_*`` is image annotation (image -> text), ``t2i_*`` image search
        (text -> image); R@K in percent, medr = floor(median rank) + 1,
        meanr = mean rank + 1, rsum = the sum of the six R@K.
    """
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


def recall_curves(image_ranks: np.ndarray, caption_ranks: np.ndarray, max_k: int = 50) -> dict[str, np.ndarray]:
    """R@K in percent for K = 1..max_k, both directions: ``{"k", "i2t", "t2i"}``."""
    ks = np.arange(1, max_k + 1)
    return {
        "k": ks,
        "i2t": 100.0 * np.mean(np.asarray(image_ranks)[:, None] < ks[None, :], axis=0),
        "t2i": 100.0 * np.mean(np.asarray(caption_ranks)[:, None] < ks[None, :], axis=0),
    }


def plot_recall_curves(curves: dict[str, np.ndarray], path, title: str = "") -> None:
    """Saves the two R@K curves as a PNG (matplotlib's Agg canvas; no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(curves["k"], curves["i2t"], label="image annotation (image -> text)")
    axes.plot(curves["k"], curves["t2i"], label="image search (text -> image)")
    axes.set_xlabel("K")
    axes.set_ylabel("R@K (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(1, int(curves["k"][-1]))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)


def format_recall_table(metrics: dict[str, float], title: str = "") -> str:
    """A small fixed-width table of both directions."""
    header = f"{'direction':<28} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'medr':>6} {'meanr':>7}"
    rows = [title] if title else []
    rows += [header, "-" * len(header)]
    for prefix, label in (("i2t", "image annotation (i->t)"), ("t2i", "image search (t->i)")):
        rows.append(
            f"{label:<28} {metrics[f'{prefix}_r1']:6.1f} {metrics[f'{prefix}_r5']:6.1f} "
            f"{metrics[f'{prefix}_r10']:6.1f} {metrics[f'{prefix}_medr']:6.0f} {metrics[f'{prefix}_meanr']:7.1f}"
        )
    rows.append(f"{'rsum':<28} {metrics['rsum']:6.1f}")
    return "\n".join(rows)


def format_map_table(metrics: dict[str, float], at: int | None = None) -> str:
    """MAP both ways (and MAP@R when present) as a small table."""
    columns = [("MAP", "")] + ([(f"MAP@{at}", f"_at_{at}")] if at else [])
    rows = [f"{'category MAP':<28} " + " ".join(f"{name:>8}" for name, _ in columns)]
    for prefix, label in (("i2t", "image -> text"), ("t2i", "text -> image"), ("mean", "mean")):
        rows.append(f"{label:<28} " + " ".join(f"{metrics[f'{prefix}_map{suffix}']:8.4f}" for _, suffix in columns))
    return "\n".join(rows)


def _check_shapes(images: np.ndarray, captions: np.ndarray, owner: np.ndarray) -> None:
    if images.ndim != 2 or captions.ndim != 2 or images.shape[1] != captions.shape[1]:
        raise ValueError(f"embeddings must be [N, D] and [M, D], got {images.shape} and {captions.shape}")
    if owner.shape != (captions.shape[0],):
        raise ValueError(f"caption_to_image must have one entry per caption ({captions.shape[0]}), got {owner.shape}")
    if owner.size and (owner.min() < 0 or owner.max() >= images.shape[0]):
        raise ValueError(f"caption_to_image must index the {images.shape[0]} images")
    without_captions = np.setdiff1d(np.arange(images.shape[0]), owner)
    if without_captions.size:
        raise ValueError(f"{without_captions.size} image(s) have no caption, e.g. row {without_captions[0]}")


def _category_codes(first: Sequence | np.ndarray, second: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label lists as integer codes of one shared vocabulary."""
    first, second = list(first), list(second)
    _, codes = np.unique(np.array([str(label) for label in first + second]), return_inverse=True)
    return codes[: len(first)], codes[len(first) :]
