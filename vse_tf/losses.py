"""Cross-modal ranking losses: pure functions of two embedding matrices.

Row ``i`` of ``image_embeddings`` and row ``i`` of ``caption_embeddings`` are a positive
pair; every other row of the other modality is a negative, except rows that show the same
image (equal ``image_ids``), which are neither.
"""

from __future__ import annotations

import tensorflow as tf

REDUCTIONS = ("sum", "mean")


def triplet_ranking_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    margin: float = 0.2,
    max_violation: bool | tf.Tensor = False,
    reduction: str = "sum",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """Bidirectional hinge (triplet) ranking loss of VSE/VSE++.

    With ``s(i, c)`` the dot product of image ``i`` and caption ``c`` and ``[x]+ = max(x, 0)``:

        loss_i = sum_{c != i} [margin - s(i, i) + s(i, c)]+      (image -> text)
               + sum_{k != i} [margin - s(i, i) + s(k, i)]+      (text -> image)

    With ``max_violation`` each sum keeps only its largest term (the hardest negative).
    ``reduction="sum"`` adds ``loss_i`` over the batch, equal to VSE++'s ContrastiveLoss;
    ``"mean"`` divides that by the batch size.

    Args:
        image_embeddings: ``float [B, D]``.
        caption_embeddings: ``float [B, D]``; row i describes image row i.
        margin: hinge margin.
        max_violation: hardest negative only; a Python bool or a boolean scalar tensor
            (a tensor lets a callback switch it without retracing).
        reduction: ``"sum"`` or ``"mean"`` over the batch.
        image_ids: optional ``int [B]``; pairs sharing an id are not negatives.

    Returns:
        A float32 scalar.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    image_embeddings = tf.cast(image_embeddings, tf.float32)
    caption_embeddings = tf.cast(caption_embeddings, tf.float32)
    scores = tf.matmul(image_embeddings, caption_embeddings, transpose_b=True)
    positives = tf.linalg.diag_part(scores)
    # cost_caption[i, c]: caption c outranks image i's own caption; cost_image[k, i]: image k
    # outranks caption i's own image.
    cost_caption = tf.nn.relu(margin + scores - positives[:, None])
    cost_image = tf.nn.relu(margin + scores - positives[None, :])
    negative_mask = _negative_mask(tf.shape(scores)[0], image_ids)
    cost_caption = cost_caption * negative_mask
    cost_image = cost_image * negative_mask
    hardest = tf.reduce_max(cost_caption, axis=1) + tf.reduce_max(cost_image, axis=0)
    every = tf.reduce_sum(cost_caption, axis=1) + tf.reduce_sum(cost_image, axis=0)
    per_pair = tf.where(tf.cast(max_violation, tf.bool), hardest, every)
    total = tf.reduce_sum(per_pair)
    if reduction == "mean":
        total = total / tf.cast(tf.shape(scores)[0], tf.float32)
    return total


def _negative_mask(batch_size: tf.Tensor, image_ids: tf.Tensor | None) -> tf.Tensor:
    """1.0 where (row, column) is a negative pair, 0.0 on the diagonal and shared images."""
    if image_ids is None:
        return 1.0 - tf.eye(batch_size, dtype=tf.float32)
    image_ids = tf.reshape(image_ids, [-1])
    same_image = tf.equal(image_ids[:, None], image_ids[None, :])
    return 1.0 - tf.cast(same_image, tf.float32)
