"""Keras building blocks shared by the two towers."""

from __future__ import annotations

from keras import layers


def unit_rows(name: str = "l2_normalize") -> layers.Layer:
    """Keras' ``UnitNormalization`` in float32: each row scaled to unit length, a zero row stays zero.

    float32 even under a mixed precision policy, so the embeddings leave a tower as float32 unit rows.
    """
    return layers.UnitNormalization(axis=-1, dtype="float32", name=name)
