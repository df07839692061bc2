"""InfoNCE (CLIP) and SigLIP against naive float64 loops over the batch's pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from vse_tf.model.losses import infonce_loss, logit_scale, siglip_loss


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    values = rng.normal(size=(rows, dim))
    return (values / np.linalg.norm(values, axis=1, keepdims=True)).astype(np.float32)


def naive_infonce(images, captions, scale, image_ids) -> float:
    """Per query: -log of the positive's share among itself and the other images' rows."""
    images, captions = images.astype(np.float64), captions.astype(np.float64)
    rows = len(images)
    total = 0.0
    for i in range(rows):
        rivals = [j for j in range(rows) if j == i or image_ids[j] != image_ids[i]]
        caption_logits = [scale * float(images[i] @ captions[j]) for j in rivals]
        image_logits = [scale * float(images[j] @ captions[i]) for j in rivals]
        positive = scale * float(images[i] @ captions[i])
        total += 0.5 * (math.log(sum(math.exp(x) for x in caption_logits)) - positive)
        total += 0.5 * (math.log(sum(math.exp(x) for x in image_logits)) - positive)
    return total / rows


def naive_siglip(images, captions, scale, bias, image_ids) -> float:
    """Sum over counted pairs of -log sigmoid(label * logit), divided by the batch size."""
    images, captions = images.astype(np.float64), captions.astype(np.float64)
    rows = len(images)
    total = 0.0
    for i in range(rows):
        for j in range(rows):
            if i != j and image_ids[i] == image_ids[j]:
                continue
            label = 1.0 if i == j else -1.0
            logit = scale * float(images[i] @ captions[j]) + bias
            total += math.log1p(math.exp(-label * logit))
    return total / rows


IDS = np.array([0, 0, 1, 2, 3, 3, 3, 4, 5, 6], np.int64)  # repeated ids: masked, not negatives


@pytest.mark.parametrize("temperature", [0.07, 0.5, 0.005])  # 0.005: the scale is clipped at 100
def test_infonce_equals_the_naive_loop(temperature):
    rng = np.random.default_rng(1)
    images, captions = unit_rows(rng, 10, 16), unit_rows(rng, 10, 16)
    captions[:5] = 0.7 * captions[:5] + images[:5]  # some near positives
    scale = min(1.0 / temperature, 100.0)
    got = infonce_loss(images, captions, log_logit_scale=math.log(1.0 / temperature), image_ids=IDS)
    assert float(logit_scale(math.log(1.0 / temperature))) == pytest.approx(scale, rel=1e-6)
    assert float(got) == pytest.approx(naive_infonce(images, captions, scale, IDS), rel=1e-5)
    summed = infonce_loss(images, captions, log_logit_scale=math.log(scale), image_ids=IDS, reduction="sum")
    assert float(summed) == pytest.approx(10 * naive_infonce(images, captions, scale, IDS), rel=1e-5)


@pytest.mark.parametrize(("scale", "bias"), [(10.0, -10.0), (2.5, 0.3)])
def test_siglip_equals_the_naive_loop(scale, bias):
    rng = np.random.default_rng(2)
    images, captions = unit_rows(rng, 10, 16), unit_rows(rng, 10, 16)
    got = siglip_loss(images, captions, log_scale=math.log(scale), bias=bias, image_ids=IDS)
    assert float(got) == pytest.approx(naive_siglip(images, captions, scale, bias, IDS), rel=1e-5)


def test_without_ids_every_off_diagonal_pair_is_a_negative():
    rng = np.random.default_rng(3)
    images, captions = unit_rows(rng, 6, 8), unit_rows(rng, 6, 8)
    distinct = np.arange(6)
    assert float(infonce_loss(images, captions)) == pytest.approx(
        naive_infonce(images, captions, 1 / 0.07, distinct), rel=1e-5
    )
    assert float(siglip_loss(images, captions)) == pytest.approx(
        naive_siglip(images, captions, 10.0, -10.0, distinct), rel=1e-5
    )


def test_the_scalars_gradients_equal_finite_differences():
    """The learned scale and bias get the derivative of the loss (float64 central differences)."""
    rng = np.random.default_rng(4)
    images, captions = unit_rows(rng, 8, 8), unit_rows(rng, 8, 8)
    ids = np.arange(8)
    log_scale, bias = tf.Variable(math.log(3.0)), tf.Variable(-1.0)
    with tf.GradientTape() as tape:
        loss = siglip_loss(images, captions, log_scale=log_scale, bias=bias, image_ids=ids)
    d_log_scale, d_bias = tape.gradient(loss, [log_scale, bias])
    step = 1e-5

    def at(ls: float, b: float) -> float:
        return naive_siglip(images, captions, math.exp(ls), b, ids)

    expected_ls = (at(math.log(3.0) + step, -1.0) - at(math.log(3.0) - step, -1.0)) / (2 * step)
    expected_b = (at(math.log(3.0), -1.0 + step) - at(math.log(3.0), -1.0 - step)) / (2 * step)
    assert float(d_log_scale) == pytest.approx(expected_ls, rel=1e-4)
    assert float(d_bias) == pytest.approx(expected_b, rel=1e-4)
