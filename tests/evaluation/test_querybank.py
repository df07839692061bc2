"""Querybank normalisation against the inverted softmax computed one query at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vse_tf.evaluation.metrics import evaluate_retrieval, recall_metrics
from vse_tf.evaluation.querybank import querybank_offsets


def unit(values: np.ndarray) -> np.ndarray:
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def hubby_set(rng: np.random.Generator):
    """Images near one of a few hub directions, captions near their image, and banks like them."""
    dim, hubs = 16, unit(rng.normal(size=(3, 16)))
    images = unit(hubs[rng.integers(0, 3, 40)] + 0.9 * rng.normal(size=(40, dim)))
    owner = np.repeat(np.arange(40), 2)
    captions = unit(images[owner] + 0.8 * rng.normal(size=(80, dim)))
    image_bank = unit(hubs[rng.integers(0, 3, 60)] + 0.9 * rng.normal(size=(60, dim)))
    caption_bank = unit(image_bank[np.repeat(np.arange(60), 2)] + 0.8 * rng.normal(size=(120, dim)))
    return [x.astype(np.float32) for x in (images, captions, image_bank, caption_bank)] + [owner]


def inverted_softmax(query: np.ndarray, gallery: np.ndarray, bank: np.ndarray, beta: float) -> list[float]:
    """exp(beta s(q, g)) / sum_b exp(beta s(b, g)) for every gallery item, by loops in float64."""
    scores = []
    for item in np.float64(gallery):
        denominator = sum(math.exp(beta * float(np.float64(b) @ item)) for b in bank)
        scores.append(math.exp(beta * float(np.float64(query) @ item)) / denominator)
    return scores


def naive_normalised_ranks(images, captions, image_bank, caption_bank, owner, beta):
    image_ranks = []
    for i, image in enumerate(images):
        scores = inverted_softmax(image, captions, image_bank, beta)
        best = max(scores[c] for c in range(len(captions)) if owner[c] == i)
        image_ranks.append(sum(1 for c in range(len(captions)) if owner[c] != i and scores[c] >= best))
    caption_ranks = []
    for c, caption in enumerate(captions):
        scores = inverted_softmax(caption, images, caption_bank, beta)
        caption_ranks.append(sum(1 for k in range(len(images)) if k != owner[c] and scores[k] >= scores[owner[c]]))
    return np.array(image_ranks), np.array(caption_ranks)


@pytest.mark.parametrize("beta", [5.0, 20.0])
def test_qb_metrics_equal_the_inverted_softmax_ranked_one_query_at_a_time(beta):
    images, captions, image_bank, caption_bank, owner = hubby_set(np.random.default_rng(0))
    got = evaluate_retrieval(
        images, captions, owner, normalise="qb", image_bank=image_bank, caption_bank=caption_bank, beta=beta
    )
    expected = recall_metrics(*naive_normalised_ranks(images, captions, image_bank, caption_bank, owner, beta))
    assert got == pytest.approx(expected)
    plain = evaluate_retrieval(images, captions, owner)
    assert got != plain  # the normalisation changes this set's ranks


def test_offsets_equal_a_float64_logsumexp_and_survive_large_beta():
    rng = np.random.default_rng(1)
    bank, gallery = unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(7, 8)))
    expected = [math.log(sum(math.exp(4.0 * float(b @ g)) for b in bank)) / 4.0 for g in gallery]
    assert querybank_offsets(bank, gallery, 4.0) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(querybank_offsets(bank, gallery, 5000.0)).all()  # exp would overflow without the shift


def test_qb_needs_both_banks_and_finite_ones():
    images, captions, image_bank, caption_bank, owner = hubby_set(np.random.default_rng(2))
    with pytest.raises(ValueError, match="caption_bank"):
        evaluate_retrieval(images, captions, owner, normalise="qb", image_bank=image_bank)
    caption_bank[3, 0] = np.nan
    with pytest.raises(ValueError, match="caption_bank.*row 3"):
        evaluate_retrieval(images, captions, owner, normalise="qb", image_bank=image_bank, caption_bank=caption_bank)
    with pytest.raises(ValueError, match="normalise"):
        evaluate_retrieval(images, captions, owner, normalise="softmax")
