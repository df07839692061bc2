"""The contrastive losses of :mod:`vse_tf.model.losses` computed ``chunk`` image rows at a time.

A global batch of ``B`` rows has a ``[B, B]`` similarity matrix; its loss and gradient, taken
as one graph, keep several such matrices alive (scores, masks, hinges or softmaxes, their
gradients): about 2 GB at ``B = 8,192``. Here each block of ``chunk`` image rows is scored
against every caption inside :func:`tf.recompute_grad`, which keeps only the block's inputs
and small outputs (per-row terms, per-column partial maxima, sums or log-sum-exps) and
recomputes the block on the backward pass, so at most ``[chunk, B]`` scores exist at once.
The column terms (text -> image) combine the blocks' partial results; the values and the
gradients equal the one-block losses' up to float32 rounding (tested).

Gradient caching (``train.micro_batch``) uses these with ``chunk = micro_batch``.
"""

from __future__ import annotations

import tensorflow as tf

from vse_tf.model.losses import REDUCTIONS, logit_scale

_MASKED_LOGIT = -1e9


def _check(image_embeddings, caption_embeddings, reduction: str, chunk: int):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return tf.cast(image_embeddings, tf.float32), tf.cast(caption_embeddings, tf.float32)


def _row_blocks(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def _static_size(images: tf.Tensor) -> int:
    size = images.shape[0]
    if size is None:
        raise ValueError("chunked losses need a static batch size (batches of train.batch_size, drop remainder)")
    return int(size)


def _same_image(image_ids: tf.Tensor | None, start: int, stop: int, size: int) -> tf.Tensor:
    """``bool [stop - start, B]``: rows ``start:stop`` against every column, true where both show one image."""
    if image_ids is None:
        return tf.equal(tf.range(start, stop)[:, None], tf.range(size)[None, :])
    image_ids = tf.reshape(image_ids, [-1])
    return tf.equal(image_ids[start:stop, None], image_ids[None, :])


def _diagonal(start: int, stop: int, size: int) -> tf.Tensor:
    return tf.equal(tf.range(start, stop)[:, None], tf.range(size)[None, :])


def _reduce(total: tf.Tensor, size: int, reduction: str) -> tf.Tensor:
    return total / float(size) if reduction == "mean" else total


def chunked_triplet_ranking_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    chunk: int,
    margin: float = 0.2,
    max_violation: bool | tf.Tensor = False,
    reduction: str = "sum",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """:func:`~vse_tf.model.losses.triplet_ranking_loss`, ``chunk`` image rows at a time.

    Args:
        image_embeddings: ``float [B, D]`` (``B`` static).
        caption_embeddings: ``float [B, D]``.
        chunk: image rows scored at once.
        margin, max_violation, reduction, image_ids: as the one-block loss.

    Returns:
        A float32 scalar.
    """
    images, captions = _check(image_embeddings, caption_embeddings, reduction, chunk)
    size = _static_size(images)
    positives = tf.reduce_sum(images * captions, axis=1)  # [B] s(i, i)
    row_hardest, row_every, column_maxima, column_sums = [], [], [], []
    for start, stop in _row_blocks(size, chunk):

        def block(block_images, all_captions, all_positives, start=start, stop=stop):
            # masks are made inside: what a block captures stays alive until the backward pass
            negatives = 1.0 - tf.cast(_same_image(image_ids, start, stop, size), tf.float32)
            scores = tf.matmul(block_images, all_captions, transpose_b=True)  # [b, B]
            cost_caption = tf.nn.relu(margin + scores - all_positives[start:stop, None]) * negatives
            cost_image = tf.nn.relu(margin + scores - all_positives[None, :]) * negatives
            return tf.concat(
                [
                    tf.reduce_sum(tf.reduce_max(cost_caption, axis=1))[None],
                    tf.reduce_sum(cost_caption)[None],
                    tf.reduce_max(cost_image, axis=0),
                    tf.reduce_sum(cost_image, axis=0),
                ],
                axis=0,
            )

        result = tf.recompute_grad(block)(images[start:stop], captions, positives)
        row_hardest.append(result[0])
        row_every.append(result[1])
        column_maxima.append(result[2 : 2 + size])
        column_sums.append(result[2 + size :])
    hardest = tf.add_n(row_hardest) + tf.reduce_sum(tf.reduce_max(tf.stack(column_maxima), axis=0))
    every = tf.add_n(row_every) + tf.reduce_sum(tf.add_n(column_sums))
    total = tf.where(tf.cast(max_violation, tf.bool), hardest, every)
    return _reduce(total, size, reduction)


def chunked_infonce_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    chunk: int,
    log_logit_scale: tf.Tensor | float,
    max_logit_scale: float,
    reduction: str = "mean",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """:func:`~vse_tf.model.losses.infonce_loss`, ``chunk`` image rows at a time.

    Image -> text: each row's log-sum-exp within its block. Text -> image: each block's
    per-column log-sum-exp over its rows, combined by a log-sum-exp over the blocks.
    """
    images, captions = _check(image_embeddings, caption_embeddings, reduction, chunk)
    size = _static_size(images)
    scale = logit_scale(log_logit_scale, max_logit_scale)
    positive_logits = scale * tf.reduce_sum(images * captions, axis=1)  # [B] a s(i, i)
    row_sums, column_partials = [], []
    for start, stop in _row_blocks(size, chunk):

        def block(block_images, all_captions, block_scale, start=start, stop=stop):
            hits = tf.logical_and(
                _same_image(image_ids, start, stop, size), tf.logical_not(_diagonal(start, stop, size))
            )
            logits = block_scale * tf.matmul(block_images, all_captions, transpose_b=True)
            logits = tf.where(hits, tf.constant(_MASKED_LOGIT, tf.float32), logits)
            row_lse = tf.reduce_logsumexp(logits, axis=1)
            return tf.concat([tf.reduce_sum(row_lse)[None], tf.reduce_logsumexp(logits, axis=0)], axis=0)

        result = tf.recompute_grad(block)(images[start:stop], captions, scale)
        row_sums.append(result[0])
        column_partials.append(result[1:])
    column_lse = tf.reduce_logsumexp(tf.stack(column_partials), axis=0)
    image_to_text = tf.add_n(row_sums) - tf.reduce_sum(positive_logits)
    text_to_image = tf.reduce_sum(column_lse) - tf.reduce_sum(positive_logits)
    return _reduce((image_to_text + text_to_image) / 2.0, size, reduction)


def chunked_siglip_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    chunk: int,
    log_scale: tf.Tensor | float,
    bias: tf.Tensor | float,
    reduction: str = "mean",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """:func:`~vse_tf.model.losses.siglip_loss`, ``chunk`` image rows at a time (every pair is its own term)."""
    images, captions = _check(image_embeddings, caption_embeddings, reduction, chunk)
    size = _static_size(images)
    scale = tf.exp(tf.cast(log_scale, tf.float32))
    bias = tf.cast(bias, tf.float32)
    totals = []
    for start, stop in _row_blocks(size, chunk):

        def block(block_images, all_captions, block_scale, block_bias, start=start, stop=stop):
            diagonal = _diagonal(start, stop, size)
            signs = 2.0 * tf.cast(diagonal, tf.float32) - 1.0
            counted = 1.0 - tf.cast(
                tf.logical_and(_same_image(image_ids, start, stop, size), tf.logical_not(diagonal)), tf.float32
            )
            logits = block_scale * tf.matmul(block_images, all_captions, transpose_b=True) + block_bias
            return tf.reduce_sum(counted * tf.nn.softplus(-signs * logits))

        totals.append(tf.recompute_grad(block)(images[start:stop], captions, scale, bias))
    return _reduce(tf.add_n(totals), size, reduction)
