"""The one image reader: encoded bytes -> RGB pixels, built from core TensorFlow ops.

Feature extraction (:mod:`vse_tf.image.features`), the training and evaluation pipeline
(:mod:`vse_tf.data.pipeline`) and the exported image tower (:mod:`vse_tf.serving.decoding`)
all read pictures with :func:`read_image`, so a picture gives the same pixels everywhere,
inside a SavedModel too. The rule:

- grayscale becomes RGB (the gray value in every channel);
- transparency (PNG alpha or palette ``tRNS``, the GIF transparent colour) is composited
  onto ``background`` (white by default, ``image.background``):
  ``round((rgb * a + background * (255 - a)) / 255)``;
- a 32-bit BMP's fourth byte is ignored (unused in ``BI_RGB`` files, as PIL reads them);
- palette images take their palette's colours; an animated GIF gives its first frame;
- the composite is resized to ``S x S`` with ``tf.image.resize(antialias=True)`` and rounded.

:func:`declared_pixels` reads the size from the header, before anything is decoded; for
a GIF it walks every block, so a small logical screen cannot hide a huge frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import tensorflow as tf

from vse_tf.data.image_facts import FORMAT_MAGICS, MAX_IMAGE_PIXELS

WHITE = (255, 255, 255)
# Format codes of :func:`format_code`, in the order of ``FORMAT_MAGICS`` (0: unknown).
JPEG, PNG, GIF, BMP = 1, 2, 3, 4
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER, _GIF_CONTROL = 0x21, 0x2C, 0x3B, 0xF9
# One-byte strings by value: the GIF rewrite splices bytes back into the encoded string.
_BYTE_STRINGS = [bytes([value]) for value in range(256)]


def format_code(encoded: tf.Tensor) -> tf.Tensor:
    """``int32 []``: 1 JPEG, 2 PNG, 3 GIF, 4 BMP, 0 unknown, from the magic bytes of ``tf.string []``."""

    def starts_with(magic: bytes) -> tf.Tensor:
        return tf.equal(tf.strings.substr(encoded, 0, len(magic), unit="BYTE"), magic)

    code = tf.constant(0)
    for value, magics in reversed(list(enumerate(FORMAT_MAGICS.values(), start=1))):
        matches = tf.reduce_any(tf.stack([starts_with(magic) for magic in magics], axis=0), axis=0)
        code = tf.where(matches, value, code)
    return code


def declared_pixels(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(largest, total)``, ``int64 []`` each, read from the header of ``tf.string []``.

    ``largest`` is the biggest raster the file declares (JPEG/PNG/BMP: height x width; GIF:
    the logical screen or any frame, whichever is larger); ``total`` is what decoding
    allocates (GIF: the screen plus every frame). ``(0, 0)`` when the header cannot be read:
    the decoder rejects such bytes.
    """
    length = tf.strings.length(encoded, unit="BYTE")
    kind = format_code(encoded)

    def integer(offset: int, dtype: tf.DType, little_endian: bool) -> tf.Tensor:
        raw = tf.strings.substr(encoded, offset, dtype.size, unit="BYTE")
        # Cast before abs: abs has no uint16 kernel; BMP stores negative heights for top-down rows.
        return tf.abs(tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64))

    def twice(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return pixels, pixels

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return twice(shape[0] * shape[1])

    def png():
        return twice(integer(20, tf.int32, False) * integer(16, tf.int32, False))

    def gif():
        blocks = gif_blocks(encoded)
        return blocks["largest"], blocks["total"]

    def bmp():
        return twice(integer(22, tf.int32, True) * integer(18, tf.int32, True))

    def unknown():
        return twice(tf.constant(0, tf.int64))

    # A header too short to hold the size falls through to the decoder, which rejects it.
    readable = tf.logical_or(length >= 26, tf.equal(kind, JPEG))
    return tf.switch_case(tf.where(readable, kind, 0), branch_fns=[unknown, jpeg, png, gif, bmp])


def gif_blocks(encoded: tf.Tensor) -> dict[str, tf.Tensor]:
    """Walks a GIF's blocks (without decoding any pixels) and returns ``int64 []`` tensors:

    ``largest`` / ``total`` pixels (see :func:`declared_pixels`), ``frames``, and for the
    first frame ``table`` (byte offset of the colour table it uses, -1 if none),
    ``table_entries``, ``control`` (offset of the packed byte of its graphic control
    extension, -1 if none) and ``transparent`` (its transparent colour index, -1 if none).
    A truncated file stops the walk where its bytes end.
    """
    data = tf.io.decode_raw(encoded, tf.uint8)
    size = tf.shape(data, out_type=tf.int64)[0]
    padded = tf.concat([tf.cast(data, tf.int64), tf.zeros([16], tf.int64)], axis=0)

    def byte(offset):
        return tf.gather(padded, tf.clip_by_value(tf.cast(offset, tf.int64), 0, size + 15))

    def uint16(offset):
        return byte(offset) + 256 * byte(offset + 1)

    def table_bytes(packed):
        return tf.where(tf.bitwise.bitwise_and(packed, 0x80) > 0, 3 * _table_entries(packed), 0)

    screen_packed = byte(10)
    screen = uint16(6) * uint16(8)
    global_table = tf.where(tf.bitwise.bitwise_and(screen_packed, 0x80) > 0, tf.constant(13, tf.int64), -1)
    minus_one = tf.constant(-1, tf.int64)
    zero = tf.constant(0, tf.int64)

    def skip_sub_blocks(offset):
        """The offset after a chain of data sub-blocks (a length byte, that many bytes; 0 ends it)."""
        # The tight inner loop: one gather per sub-block (most of a GIF's bytes are here).
        return (
            tf.while_loop(
                lambda at: (at < size) & (tf.gather(padded, tf.minimum(at, size)) > 0),
                lambda at: [at + 1 + tf.gather(padded, at)],
                [offset],
                parallel_iterations=1,
            )[0]
            + 1
        )

    # State: offset, done?, largest, total, frames, table, entries, control, transparent.
    start = (
        13 + table_bytes(screen_packed),
        tf.constant(False),
        screen,
        screen,
        zero,
        global_table,
        tf.where(global_table >= 0, _table_entries(screen_packed), 0),
        minus_one,
        minus_one,
    )

    def more(offset, done, *rest):
        return tf.logical_and(tf.logical_not(done), offset < size)

    def step(offset, done, largest, total, frames, table, entries, control, transparent):
        # A block: an extension (introducer, label, sub-blocks), an image, or the trailer.
        introducer = byte(offset)
        is_extension = tf.equal(introducer, _GIF_EXTENSION)
        is_image = tf.equal(introducer, _GIF_IMAGE)
        first = tf.equal(frames, 0)
        is_control = is_extension & tf.equal(byte(offset + 1), _GIF_CONTROL) & first
        has_transparency = tf.bitwise.bitwise_and(byte(offset + 3), 1) > 0
        frame = uint16(offset + 5) * uint16(offset + 7)
        image_packed = byte(offset + 9)
        use_local = is_image & first & (tf.bitwise.bitwise_and(image_packed, 0x80) > 0)
        # Image data: descriptor, local table, the LZW code size byte, then sub-blocks.
        chain = tf.where(is_extension, offset + 2, offset + 10 + table_bytes(image_packed) + 1)
        known = is_extension | is_image
        return (
            tf.cond(known, lambda: skip_sub_blocks(chain), lambda: offset),
            tf.logical_not(known),
            tf.where(is_image, tf.maximum(largest, frame), largest),
            tf.where(is_image, total + frame, total),
            tf.where(is_image, frames + 1, frames),
            tf.where(use_local, offset + 10, table),
            tf.where(use_local, _table_entries(image_packed), entries),
            tf.where(is_control, offset + 3, control),
            tf.where(is_control, tf.where(has_transparency, byte(offset + 6), -1), transparent),
        )

    final = tf.while_loop(more, step, start, parallel_iterations=1)
    names = ("largest", "total", "frames", "table", "table_entries", "control", "transparent")
    return dict(zip(names, final[2:]))


def error_message(error: tf.errors.OpError) -> str:
    """One readable line from a reader error: ``vse_tf: image too large: ... 64 pixels; ...``."""
    line = error.message.splitlines()[0] if error.message else type(error).__name__
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    if line.startswith("assertion failed: "):
        line = " ".join(re.findall(r"\[([^\]]*)\]", line.removeprefix("assertion failed: ")))
    return line


def _table_entries(packed: tf.Tensor) -> tf.Tensor:
    """Colour table entries a GIF packed byte declares: ``2 ** (size bits + 1)``."""
    return tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8)


def read_image(
    encoded: tf.Tensor,
    image_size: int,
    background: Sequence[int] = WHITE,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP bytes ``tf.string []`` -> ``uint8 [S, S, 3]`` by the module's rule.

    Raises InvalidArgument (at run time) for bytes that are not one of these formats, for
    images whose header declares more than ``max_pixels`` pixels in one raster (checked
    before decoding), and for truncated or corrupt data.
    """
    largest, _ = declared_pixels(encoded)
    checks = [
        tf.debugging.Assert(tf.not_equal(format_code(encoded), 0), ["vse_tf: not a JPEG, PNG, GIF or BMP image"]),
        tf.debugging.Assert(
            largest <= max_pixels,
            ["vse_tf: image too large: it declares a raster of", largest, "pixels; the limit is", max_pixels],
        ),
    ]
    with tf.control_dependencies(checks):
        pixels = decode_rgb(tf.identity(encoded), background)
    return resize_pixels(pixels, image_size)


def decode_rgb(encoded: tf.Tensor, background: Sequence[int] = WHITE) -> tf.Tensor:
    """``tf.string []`` -> ``uint8 [H, W, 3]``: gray to RGB, transparency onto ``background``."""
    background = _check_background(background)
    kind = format_code(encoded)
    encoded = tf.cond(tf.equal(kind, GIF), lambda: _gif_transparency_as(encoded, background), lambda: encoded)
    image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    image.set_shape([None, None, None])
    channels = tf.shape(image)[-1]
    colour = tf.cond(channels < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1), lambda: image[..., :3])
    has_alpha = tf.equal(channels % 2, 0) & tf.not_equal(kind, BMP)
    rgb = tf.cond(has_alpha, lambda: _composite(colour, image[..., -1:], background), lambda: colour)
    rgb.set_shape([None, None, 3])
    return rgb


def resize_pixels(pixels: tf.Tensor, image_size: int) -> tf.Tensor:
    """``uint8 [H, W, 3]`` -> ``uint8 [S, S, 3]`` (antialiased, rounded)."""
    resized = tf.image.resize(pixels, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _composite(colour: tf.Tensor, alpha: tf.Tensor, background: tuple[int, int, int]) -> tf.Tensor:
    """``uint8 [H, W, 3]`` over ``background`` with ``uint8 [H, W, 1]`` alpha -> ``uint8 [H, W, 3]``."""
    alpha = tf.cast(alpha, tf.float32)
    blended = tf.cast(colour, tf.float32) * alpha + tf.constant(background, tf.float32) * (255.0 - alpha)
    return tf.cast(tf.round(blended / 255.0), tf.uint8)


def _gif_transparency_as(encoded: tf.Tensor, background: tuple[int, int, int]) -> tf.Tensor:
    """The GIF with its first frame's transparent colour replaced by ``background`` and the
    transparency flag cleared, so that decoding gives the composite.

    TensorFlow's GIF decoder writes transparent pixels of the first frame as black and
    returns no alpha; GIF transparency is all or nothing, so recolouring the transparent
    palette entry is exactly the composite.
    """
    blocks = gif_blocks(encoded)
    entry = blocks["table"] + 3 * blocks["transparent"]
    usable = (
        (blocks["control"] >= 0)
        & (blocks["transparent"] >= 0)
        & (blocks["table"] >= 0)
        & (blocks["transparent"] < blocks["table_entries"])
        & (entry + 3 <= tf.cast(tf.strings.length(encoded, unit="BYTE"), tf.int64))
    )

    def rewrite():
        control_byte = tf.strings.substr(encoded, tf.cast(blocks["control"], tf.int32), 1, unit="BYTE")
        flags = tf.cast(tf.io.decode_raw(control_byte, tf.uint8)[0], tf.int64)
        cleared = tf.gather(tf.constant(_BYTE_STRINGS), tf.bitwise.bitwise_and(flags, 0xFE))
        recoloured = _splice(encoded, entry, tf.constant(bytes(background)))
        return _splice(recoloured, blocks["control"], cleared)

    return tf.cond(usable, rewrite, lambda: encoded)


def _splice(encoded: tf.Tensor, offset: tf.Tensor, replacement: tf.Tensor) -> tf.Tensor:
    """``encoded`` with the bytes at ``offset`` overwritten by ``replacement`` (same length)."""
    offset = tf.cast(offset, tf.int32)
    after = offset + tf.strings.length(replacement, unit="BYTE")
    rest = tf.strings.length(encoded, unit="BYTE") - after
    head = tf.strings.substr(encoded, tf.constant(0, tf.int32), offset, unit="BYTE")
    return tf.strings.join([head, replacement, tf.strings.substr(encoded, after, rest, unit="BYTE")])


def _check_background(background: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(value) for value in background)
    if len(values) != 3 or not all(0 <= value <= 255 for value in values):
        raise ValueError(f"background must be three values in 0..255 (RGB), got {tuple(background)!r}")
    return values
