"""Chunked losses equal the one-block losses (value and gradients), in and out of tf.function."""

import numpy as np
import pytest
import tensorflow as tf

from vse_tf.model.chunked_losses import chunked_infonce_loss, chunked_siglip_loss, chunked_triplet_ranking_loss
from vse_tf.model.losses import infonce_loss, siglip_loss, triplet_ranking_loss


def batch(size=13, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    images = unit(rng.normal(size=(size, dim)))
    captions = unit(images + 0.6 * rng.normal(size=(size, dim)))
    ids = np.arange(size)
    ids[[3, 7, size - 2]] = ids[2]  # rows showing one image: neither positives nor negatives
    return tf.constant(images, tf.float32), tf.constant(captions, tf.float32), tf.constant(ids, tf.int64)


def value_and_gradients(loss, images, captions, scalars):
    with tf.GradientTape() as tape:
        tape.watch([images, captions, *scalars])
        value = loss(images, captions, *scalars)
    return value, tape.gradient(value, [images, captions, *scalars])


CASES = {
    "triplet_sum": (
        lambda i, c, ids: triplet_ranking_loss(i, c, margin=0.2, max_violation=False, image_ids=ids),
        lambda i, c, ids, n: chunked_triplet_ranking_loss(
            i, c, chunk=n, margin=0.2, max_violation=False, image_ids=ids
        ),
        0,
    ),
    "triplet_max_violation": (
        lambda i, c, ids: triplet_ranking_loss(i, c, margin=0.2, max_violation=True, image_ids=ids, reduction="mean"),
        lambda i, c, ids, n: chunked_triplet_ranking_loss(
            i, c, chunk=n, margin=0.2, max_violation=tf.constant(True), image_ids=ids, reduction="mean"
        ),
        0,
    ),
    "infonce": (
        lambda i, c, ids, a: infonce_loss(i, c, log_logit_scale=a, max_logit_scale=100.0, image_ids=ids),
        lambda i, c, ids, n, a: chunked_infonce_loss(
            i, c, chunk=n, log_logit_scale=a, max_logit_scale=100.0, image_ids=ids
        ),
        1,
    ),
    "siglip": (
        lambda i, c, ids, s, b: siglip_loss(i, c, log_scale=s, bias=b, image_ids=ids),
        lambda i, c, ids, n, s, b: chunked_siglip_loss(i, c, chunk=n, log_scale=s, bias=b, image_ids=ids),
        2,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("chunk", [1, 4, 13, 40])
def test_chunked_loss_equals_the_one_block_loss_and_its_gradients(name, chunk):
    plain, chunked, scalar_count = CASES[name]
    images, captions, ids = batch()
    scalars = [tf.constant(np.log(1 / 0.07), tf.float32)] if name == "infonce" else []
    if name == "siglip":
        scalars = [tf.constant(np.log(10.0), tf.float32), tf.constant(-3.0, tf.float32)]
    assert len(scalars) == scalar_count
    want, want_gradients = value_and_gradients(lambda i, c, *s: plain(i, c, ids, *s), images, captions, scalars)
    got, got_gradients = value_and_gradients(lambda i, c, *s: chunked(i, c, ids, chunk, *s), images, captions, scalars)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)
    for g, w in zip(got_gradients, want_gradients):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-5)


def test_chunked_loss_inside_tf_function_and_without_ids():
    images, captions, _ = batch(size=9, seed=3)

    @tf.function
    def both(i, c):
        with tf.GradientTape() as tape:
            tape.watch([i, c])
            plain = triplet_ranking_loss(i, c, max_violation=True)
        with tf.GradientTape() as chunked_tape:
            chunked_tape.watch([i, c])
            chunked = chunked_triplet_ranking_loss(i, c, chunk=2, max_violation=True)
        return plain, chunked, tape.gradient(plain, [i, c]), chunked_tape.gradient(chunked, [i, c])

    plain, chunked, plain_gradients, chunked_gradients = both(images, captions)
    np.testing.assert_allclose(chunked.numpy(), plain.numpy(), rtol=1e-5)
    for g, w in zip(chunked_gradients, plain_gradients):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-5)


def test_chunk_must_be_positive():
    images, captions, _ = batch()
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        chunked_triplet_ranking_loss(images, captions, chunk=0)
