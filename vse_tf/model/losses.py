"""Cross-modal ranking losses: pure functions of two embedding matrices.

Siblings behind one interface (two embedding matrices, keyword options, ``image_ids``):
:func:`triplet_ranking_loss` (VSE/VSE++ hinge), :func:`pairwise_similarity_loss`
(binary or fine-grained labels, Xu et al. 2019), :func:`infonce_loss` (CLIP) and
:func:`siglip_loss` (SigLIP); the last two take their learned scalars as arguments (the
variables live in the DualEncoder).

Row ``i`` of ``image_embeddings`` and row ``i`` of ``caption_embeddings`` are a positive
pair; every other row of the other modality is a negative, except rows that show the same
image (equal ``image_ids``), which are neither.
"""

from __future__ import annotations

import math

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
    scores = _similarity_scores(image_embeddings, caption_embeddings, reduction)
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
    return _reduce(total, scores, reduction)


def _similarity_scores(image_embeddings: tf.Tensor, caption_embeddings: tf.Tensor, reduction: str) -> tf.Tensor:
    """``float32 [B, B]`` dot products, image rows by caption columns (checks ``reduction``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    image_embeddings = tf.cast(image_embeddings, tf.float32)
    caption_embeddings = tf.cast(caption_embeddings, tf.float32)
    return tf.matmul(image_embeddings, caption_embeddings, transpose_b=True)


def _reduce(total: tf.Tensor, scores: tf.Tensor, reduction: str) -> tf.Tensor:
    """The summed loss, or (``"mean"``) the sum divided by the batch size."""
    if reduction == "mean":
        return total / tf.cast(tf.shape(scores)[0], tf.float32)
    return total


def _negative_mask(batch_size: tf.Tensor, image_ids: tf.Tensor | None) -> tf.Tensor:
    """1.0 where (row, column) is a negative pair, 0.0 on the diagonal and shared images."""
    if image_ids is None:
        return 1.0 - tf.eye(batch_size, dtype=tf.float32)
    image_ids = tf.reshape(image_ids, [-1])
    same_image = tf.equal(image_ids[:, None], image_ids[None, :])
    return 1.0 - tf.cast(same_image, tf.float32)


def pairwise_similarity_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    labels: tf.Tensor | None = None,
    scale: float = 10.0,
    offset: float = 0.5,
    reduction: str = "sum",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """Pairwise similarity loss over every (image, caption) pair of the batch, soft labels allowed.

    With ``s(i, c)`` the dot product of image ``i`` and caption ``c``, the logit
    ``t(i, c) = scale * (s(i, c) - offset)`` and a label ``y(i, c)`` in [0, 1]:

        loss = sum_i sum_c  softplus(t(i, c)) - y(i, c) * t(i, c)

    which is the cross-entropy of ``sigmoid(t)`` against the target ``y`` (minus the
    target's own entropy, a constant). With every label 0 or 1 it is the plain binary
    pairwise loss: ``-log sigmoid(t)`` for a relevant pair and ``-log(1 - sigmoid(t))``
    for an irrelevant one. Fine-grained labels (:func:`fine_grained_labels`) move the
    target of a negative whose texts are alike above 0, and of a positive whose texts
    differ below 1. The gradient on ``t`` is ``sigmoid(t) - y``.

    Args:
        image_embeddings: ``float [B, D]``.
        caption_embeddings: ``float [B, D]``; row i describes image row i.
        labels: ``float [B, B]``, ``labels[i, c]`` for image ``i`` and caption ``c``;
            ``None`` means binary: 1 where the caption shows the image (the diagonal and
            equal ``image_ids``), else 0.
        scale: logit scale.
        offset: similarity at which the logit is 0.
        reduction: ``"sum"`` over the B x B pairs or ``"mean"``: that sum divided by B.
        image_ids: optional ``int [B]``; used for binary labels when ``labels`` is None.

    Returns:
        A float32 scalar.
    """
    scores = _similarity_scores(image_embeddings, caption_embeddings, reduction)
    if labels is None:
        labels = 1.0 - _negative_mask(tf.shape(scores)[0], image_ids)
    logits = scale * (scores - offset)
    total = tf.reduce_sum(tf.nn.softplus(logits) - tf.cast(labels, tf.float32) * logits)
    return _reduce(total, scores, reduction)


def fine_grained_labels(
    text_vectors: tf.Tensor, image_ids: tf.Tensor | None = None, strength: float = 1.0
) -> tf.Tensor:
    """Labels of every (image i, caption c) pair of a batch from siamese text vectors.

    Row ``i`` of the batch holds image ``i`` and a text of it, so image ``i``'s own text
    is caption ``i``: ``label(i, c) = strength * clip(v_i . v_c, 0, 1)``, the siamese
    similarity of the two texts, and 1 where caption ``c`` shows image ``i`` (equal
    ``image_ids``). ``strength`` 0 gives the binary labels, 1 the plain similarity.

    Args:
        text_vectors: ``float [B, S]`` unit siamese vectors of the batch's captions.
        image_ids: optional ``int [B]``.
        strength: scale of the labels of non-matching pairs, in [0, 1].

    Returns:
        ``float32 [B, B]`` in [0, 1], symmetric.
    """
    text_vectors = tf.cast(text_vectors, tf.float32)
    similarity = tf.clip_by_value(tf.matmul(text_vectors, text_vectors, transpose_b=True), 0.0, 1.0)
    positives = 1.0 - _negative_mask(tf.shape(text_vectors)[0], image_ids)
    return tf.maximum(strength * similarity, positives)


def same_category_labels(category_ids: tf.Tensor) -> tf.Tensor:
    """Binary labels by category: 1 where image ``i`` and caption ``c`` share a category.

    The hard labels that fine-grained labels refine: every same-category pair is relevant
    (a caption and its own image always are), every other pair is not.

    Args:
        category_ids: ``int [B]``, the category of each row's image.

    Returns:
        ``float32 [B, B]`` of 0 and 1, symmetric.
    """
    category_ids = tf.reshape(category_ids, [-1])
    return tf.cast(tf.equal(category_ids[:, None], category_ids[None, :]), tf.float32)


INFONCE_INITIAL_TEMPERATURE = 0.07
INFONCE_MAX_LOGIT_SCALE = 100.0
SIGLIP_INITIAL_SCALE = 10.0
SIGLIP_INITIAL_BIAS = -10.0
INFONCE_INITIAL_LOG_SCALE = math.log(1.0 / INFONCE_INITIAL_TEMPERATURE)
SIGLIP_INITIAL_LOG_SCALE = math.log(SIGLIP_INITIAL_SCALE)


def infonce_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    log_logit_scale: tf.Tensor | float = INFONCE_INITIAL_LOG_SCALE,
    max_logit_scale: float = INFONCE_MAX_LOGIT_SCALE,
    reduction: str = "mean",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """CLIP's symmetric cross-entropy over the batch's similarity matrix (InfoNCE).

    With ``s(i, c)`` the dot product of image ``i`` and caption ``c`` and the logit scale
    ``a = min(exp(log_logit_scale), max_logit_scale)`` (one over the temperature):

        loss_i = (-log softmax_c(a s(i, c))[i] - log softmax_k(a s(k, i))[i]) / 2

    Rows that show the same image as row ``i`` (equal ``image_ids``, off the diagonal) are
    left out of both softmax denominators: they are neither positives nor negatives.
    ``reduction="mean"`` (CLIP's) averages ``loss_i`` over the batch, ``"sum"`` adds it up.

    Args:
        image_embeddings: ``float [B, D]``.
        caption_embeddings: ``float [B, D]``; row i describes image row i.
        log_logit_scale: scalar, the log of the logit scale (a trainable variable in
            :class:`~vse_tf.model.dual_encoder.DualEncoder`; CLIP starts at ``log(1 / 0.07)``).
        max_logit_scale: the logit scale is clipped here (CLIP: 100).
        reduction: ``"mean"`` or ``"sum"`` over the batch.
        image_ids: optional ``int [B]``.

    Returns:
        A float32 scalar.
    """
    scores = _similarity_scores(image_embeddings, caption_embeddings, reduction)
    logits = logit_scale(log_logit_scale, max_logit_scale) * scores
    masked = tf.where(_accidental_hits(tf.shape(scores)[0], image_ids), tf.constant(-1e9, tf.float32), logits)
    targets = tf.range(tf.shape(scores)[0])
    image_to_text = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=masked)
    text_to_image = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=tf.transpose(masked))
    total = tf.reduce_sum(image_to_text + text_to_image) / 2.0
    return _reduce(total, scores, reduction)


def logit_scale(log_logit_scale: tf.Tensor | float, max_logit_scale: float = INFONCE_MAX_LOGIT_SCALE) -> tf.Tensor:
    """``min(exp(log_logit_scale), max_logit_scale)`` as float32 (InfoNCE's 1 / temperature)."""
    clipped = tf.minimum(tf.cast(log_logit_scale, tf.float32), math.log(max_logit_scale))
    return tf.exp(clipped)


def siglip_loss(
    image_embeddings: tf.Tensor,
    caption_embeddings: tf.Tensor,
    *,
    log_scale: tf.Tensor | float = SIGLIP_INITIAL_LOG_SCALE,
    bias: tf.Tensor | float = SIGLIP_INITIAL_BIAS,
    reduction: str = "mean",
    image_ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """SigLIP's sigmoid loss: every (image, caption) pair of the batch a binary decision.

    With ``s(i, c)`` the dot product, the logit ``z(i, c) = exp(log_scale) s(i, c) + bias``
    and ``y(i, c)`` = 1 on the diagonal, -1 elsewhere:

        loss = sum_i sum_c -log sigmoid(y(i, c) z(i, c))

    Off-diagonal pairs that show the same image (equal ``image_ids``) are left out: neither
    positives nor negatives. ``reduction="mean"`` (SigLIP's) divides by the batch size B,
    ``"sum"`` does not. This is :func:`pairwise_similarity_loss` with a learnable scale and
    bias (``bias = -scale * offset``), and with same-image pairs masked rather than positive.

    Args:
        image_embeddings: ``float [B, D]``.
        caption_embeddings: ``float [B, D]``; row i describes image row i.
        log_scale: scalar log of the logit scale (SigLIP starts at ``log 10``).
        bias: scalar logit bias (SigLIP starts at -10, so that the many negatives start
            with a small loss).
        reduction: ``"mean"`` or ``"sum"``.
        image_ids: optional ``int [B]``.

    Returns:
        A float32 scalar.
    """
    scores = _similarity_scores(image_embeddings, caption_embeddings, reduction)
    logits = tf.exp(tf.cast(log_scale, tf.float32)) * scores + tf.cast(bias, tf.float32)
    batch_size = tf.shape(scores)[0]
    signs = 2.0 * tf.eye(batch_size, dtype=tf.float32) - 1.0
    counted = 1.0 - tf.cast(_accidental_hits(batch_size, image_ids), tf.float32)
    total = tf.reduce_sum(counted * tf.nn.softplus(-signs * logits))  # -log sigmoid(x) = softplus(-x)
    return _reduce(total, scores, reduction)


def _accidental_hits(batch_size: tf.Tensor, image_ids: tf.Tensor | None) -> tf.Tensor:
    """``bool [B, B]``: true off the diagonal where the two rows show the same image."""
    if image_ids is None:
        return tf.zeros([batch_size, batch_size], tf.bool)
    return tf.logical_and(
        _negative_mask(batch_size, image_ids) < 0.5, tf.logical_not(tf.eye(batch_size, dtype=tf.bool))
    )
