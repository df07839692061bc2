"""Querybank normalisation (inverted softmax): scores that discount hub gallery items.

A hub is a gallery item that is the nearest neighbour of many queries. With a bank ``B`` of
queries like the real ones (training captions for image search, training images for
annotation), the inverted softmax (QB-Norm, Bogolin et al. 2022; the dual softmax of
Cheng et al. 2021) scores query ``q`` against gallery item ``g`` as

    exp(beta s(q, g)) / sum_b exp(beta s(b, g)),

which ranks the gallery as ``s(q, g) - offset(g)`` with
``offset(g) = logsumexp_b(beta s(b, g)) / beta``: a hub, close to many bank queries, gets a
large offset. That is a dot product of augmented vectors (one extra coordinate per
direction), so the exact ranking code ranks normalised scores unchanged.
"""

from __future__ import annotations

import numpy as np

NORMALISATIONS = ("none", "qb")
DEFAULT_BETA = 20.0
# Bank rows scored at once per chunk of gallery items (float64 [chunk, bank]).
_CHUNK_SCORES = 2**22


def querybank_offsets(bank: np.ndarray, gallery: np.ndarray, beta: float = DEFAULT_BETA) -> np.ndarray:
    """``offset(g) = logsumexp_b(beta s(b, g)) / beta`` for every gallery row, in float64.

    Args:
        bank: ``[Q, D]`` bank queries.
        gallery: ``[G, D]`` gallery items.
        beta: inverse temperature of the inverted softmax (> 0).

    Returns:
        ``float64 [G]``.
    """
    if beta <= 0:
        raise ValueError(f"the querybank beta must be positive, got {beta}")
    bank = np.asarray(bank, dtype=np.float64)
    gallery = np.asarray(gallery, dtype=np.float64)
    if bank.ndim != 2 or gallery.ndim != 2 or bank.shape[1] != gallery.shape[1] or not len(bank):
        raise ValueError(f"querybank: bank {bank.shape} and gallery {gallery.shape} must be [Q>0, D] and [G, D]")
    chunk = max(1, _CHUNK_SCORES // len(bank))
    offsets = np.empty(len(gallery))
    for start in range(0, len(gallery), chunk):
        logits = beta * (gallery[start : start + chunk] @ bank.T)  # [chunk, Q]
        peak = logits.max(axis=1, keepdims=True)
        offsets[start : start + chunk] = (peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))) / beta
    return offsets


def querybank_normalised(
    images: np.ndarray,
    captions: np.ndarray,
    image_bank: np.ndarray,
    caption_bank: np.ndarray,
    beta: float = DEFAULT_BETA,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented embeddings whose dot products are the normalised scores of both directions.

    ``images' = [images, -offset_image, 1]`` and ``captions' = [captions, 1, -offset_caption]``:
    ``images'[i] . captions'[c] = s(i, c) - offset_image(i) - offset_caption(c)``. Ranking the
    captions of one image, ``offset_image(i)`` is a constant, so annotation ranks by
    ``s - offset_caption`` (offsets from the image bank); image search likewise ranks by
    ``s - offset_image`` (offsets from the caption bank).

    Args:
        images: ``[N, D]`` gallery images.
        captions: ``[M, D]`` gallery captions.
        image_bank: ``[Q1, D]`` image queries (e.g. training images): normalises captions.
        caption_bank: ``[Q2, D]`` caption queries (e.g. training captions): normalises images.
        beta: inverse temperature.

    Returns:
        ``(float32 [N, D + 2], float32 [M, D + 2])``.
    """
    image_offsets = querybank_offsets(caption_bank, images, beta)
    caption_offsets = querybank_offsets(image_bank, captions, beta)
    ones_n, ones_m = np.ones((len(images), 1)), np.ones((len(captions), 1))
    augmented_images = np.hstack([np.asarray(images, np.float64), -image_offsets[:, None], ones_n])
    augmented_captions = np.hstack([np.asarray(captions, np.float64), ones_m, -caption_offsets[:, None]])
    return augmented_images.astype(np.float32), augmented_captions.astype(np.float32)
