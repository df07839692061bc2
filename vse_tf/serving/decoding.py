"""In-graph image decoding for serving: the one image reader behind a request's size checks.

Every image's header is read first (for a GIF, every frame's descriptor), and the batch is
refused before anything is decoded when one image declares a raster over ``max_pixels``
or the batch's images together declare more than ``max_batch_pixels``.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from vse_tf.data.image_facts import MAX_BATCH_PIXELS, MAX_IMAGE_PIXELS
from vse_tf.data.images import WHITE, declared_pixels, decode_rgb, format_code, read_image, resize_pixels


def decode_for_serving(
    encoded: tf.Tensor, image_size: int, max_pixels: int = MAX_IMAGE_PIXELS, background: Sequence[int] = WHITE
) -> tf.Tensor:
    """One image: ``tf.string []`` -> ``uint8 [S, S, 3]`` (see :func:`vse_tf.data.images.read_image`).

    Raises InvalidArgument (at run time) for bytes that are not JPEG/PNG/GIF/BMP, and for
    images whose header declares more than ``max_pixels`` pixels, before decoding them.
    """
    return read_image(encoded, image_size, background, max_pixels)


def decode_batch_for_serving(
    images: tf.Tensor,
    image_size: int,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_batch_pixels: int = MAX_BATCH_PIXELS,
    background: Sequence[int] = WHITE,
) -> tf.Tensor:
    """A request: ``tf.string [N]`` -> ``uint8 [N, S, S, 3]`` (``N`` may be 0).

    Raises InvalidArgument (at run time) before any image is decoded when the images'
    headers declare more than ``max_batch_pixels`` in all (a GIF counts its screen and
    every frame), and for each image as :func:`decode_for_serving` does.
    """
    kinds, largest, totals = tf.map_fn(
        lambda encoded: (format_code(encoded), *declared_pixels(encoded)),
        images,
        fn_output_signature=(tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)),
    )
    unknown = tf.argmin(tf.concat([kinds, [1]], axis=0))
    format_check = tf.debugging.Assert(
        tf.reduce_all(kinds > 0), ["vse_tf: image", unknown, "of the batch is not a JPEG, PNG, GIF or BMP image"]
    )
    first = tf.argmax(tf.concat([largest, [0]], axis=0))  # the largest raster, and where it is
    image_check = tf.debugging.Assert(
        tf.reduce_all(largest <= max_pixels),
        [
            "vse_tf: image too large: image",
            first,
            "of the batch declares a raster of",
            tf.reduce_max(largest),
            "pixels; the limit is",
            max_pixels,
        ],
    )
    batch_total = tf.reduce_sum(totals)
    with tf.control_dependencies([format_check, image_check]):  # the per-image messages come first
        batch_check = tf.debugging.Assert(
            batch_total <= max_batch_pixels,
            [
                "vse_tf: batch too large: its images declare",
                batch_total,
                "pixels in all; the limit is",
                max_batch_pixels,
            ],
        )
    with tf.control_dependencies([format_check, image_check, batch_check]):
        images = tf.identity(images)
    # Headers checked above: each image is decoded without reading them again.
    return tf.map_fn(
        lambda encoded: resize_pixels(decode_rgb(encoded, background), image_size),
        images,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8),
    )
