"""In-graph image decoding for serving: format by magic bytes, declared size checked before decoding."""

from __future__ import annotations

import tensorflow as tf

from vse_tf.data.image_facts import FORMAT_MAGICS
from vse_tf.data.pipeline import decode_and_resize


def decode_for_serving(encoded: tf.Tensor, image_size: int, max_pixels: int) -> tf.Tensor:
    """Checks the format and the declared size from the header, then decodes and resizes.

    Raises InvalidArgument (at run time) for bytes that are not JPEG/PNG/GIF/BMP, and for
    images whose header declares more than ``max_pixels`` pixels, before decoding them.
    """
    height, width = _declared_size(encoded)
    known = tf.not_equal(_prefix_format(encoded), 0)
    checks = [
        tf.debugging.Assert(known, ["vse_tf: not a JPEG, PNG, GIF or BMP image"]),
        tf.debugging.Assert(
            height * width <= max_pixels,
            ["vse_tf: image too large:", height, "x", width, "pixels; the limit is", max_pixels],
        ),
    ]
    with tf.control_dependencies(checks):
        return decode_and_resize(tf.identity(encoded), image_size)


def _prefix_format(encoded: tf.Tensor) -> tf.Tensor:
    """1 JPEG, 2 PNG, 3 GIF, 4 BMP, 0 unknown, from the magic bytes."""

    def starts_with(magic: bytes) -> tf.Tensor:
        return tf.equal(tf.strings.substr(encoded, 0, len(magic), unit="BYTE"), magic)

    code = tf.constant(0)
    for value, magics in reversed(list(enumerate(FORMAT_MAGICS.values(), start=1))):
        matches = tf.reduce_any(tf.stack([starts_with(magic) for magic in magics], axis=0), axis=0)
        code = tf.where(matches, value, code)
    return code


def _declared_size(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) as int64 read from the header; (0, 0) when it cannot be read."""
    length = tf.strings.length(encoded, unit="BYTE")
    kind = _prefix_format(encoded)

    def integer(offset: int, dtype: tf.DType, little_endian: bool) -> tf.Tensor:
        raw = tf.strings.substr(encoded, offset, dtype.size, unit="BYTE")
        # Cast before abs: abs has no uint16 kernel; BMP stores negative heights for top-down rows.
        return tf.abs(tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return shape[0], shape[1]

    def png():
        return integer(20, tf.int32, False), integer(16, tf.int32, False)

    def gif():
        return integer(8, tf.uint16, True), integer(6, tf.uint16, True)

    def bmp():
        return integer(22, tf.int32, True), integer(18, tf.int32, True)

    def unknown():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    # A header too short to hold the size falls through to the decoder, which rejects it.
    readable = tf.logical_or(length >= 26, tf.equal(kind, 1))
    return tf.switch_case(tf.where(readable, kind, 0), branch_fns=[unknown, jpeg, png, gif, bmp])
