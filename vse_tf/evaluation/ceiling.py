"""The retrieval ceiling of a test split whose images can share one description."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def retrieval_ceiling(descriptions: Sequence[str], captions_per_image: Sequence[int] | int) -> dict[str, float]:
    """Best R@1 (percent) any model could reach when images sharing a description look the same.

    Ties are broken at random. t2i: mean over captions of ``1 / (images with the caption's
    description)``. i2t: mean over images of ``own captions / captions with that description``.

    Args:
        descriptions: one description key per image.
        captions_per_image: captions of each image (or one count for all).

    Returns:
        ``{"i2t_r1", "t2i_r1", "mean_r1"}`` in percent.
    """
    counts = (
        [captions_per_image] * len(descriptions) if isinstance(captions_per_image, int) else list(captions_per_image)
    )
    if len(counts) != len(descriptions):
        raise ValueError(f"got {len(descriptions)} descriptions but {len(counts)} caption counts")
    if not descriptions or sum(counts) == 0:
        raise ValueError("retrieval_ceiling needs at least one image with captions")
    images_with = Counter(descriptions)
    captions_with: Counter = Counter()
    for description, count in zip(descriptions, counts):
        captions_with[description] += count
    t2i = sum(count / images_with[d] for d, count in zip(descriptions, counts)) / sum(counts)
    i2t = sum(count / captions_with[d] if count else 0.0 for d, count in zip(descriptions, counts)) / len(counts)
    t2i, i2t = 100.0 * t2i, 100.0 * i2t
    return {"i2t_r1": i2t, "t2i_r1": t2i, "mean_r1": (i2t + t2i) / 2.0}
