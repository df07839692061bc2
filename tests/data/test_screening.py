"""Screening proves each image by structure or by a full decode, and opens only regular files."""

import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vse_tf.data.records import CaptionRecord
from vse_tf.data.screening import check_image, screen_records
from vse_tf.data.skips import SkipLog

RNG = np.random.default_rng(0)
# Smooth noise: an image whose blocks all differ, like a photograph's.
PIXELS = np.cumsum(RNG.integers(-8, 9, size=(96, 128, 3)), axis=1).clip(0, 255).astype(np.uint8)


def encoded(kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, kind, **options)
    return buffer.getvalue()


def tf_decodes(data: bytes) -> bool:
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
        return True
    except tf.errors.InvalidArgumentError:
        return False


def corrupt_png_data(fix_crc: bool) -> bytes:
    data = bytearray(encoded("PNG"))
    start = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[start - 4 : start])
    data[start + 4 + length // 2] ^= 0xFF
    if fix_crc:  # the CRC matches the damaged bytes: only decoding finds the damage
        data[start + 4 + length : start + 8 + length] = struct.pack(
            ">I", zlib.crc32(bytes(data[start : start + 4 + length]))
        )
    return bytes(data)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_a_jpeg_cut_short_with_an_end_marker_is_truncated(tmp_path):
    whole = encoded("JPEG", quality=90)
    cut = whole[: int(len(whole) * 0.4)] + b"\xff\xd9"
    # the reference: TensorFlow decodes the cut file without complaint, to pixels far from the picture's
    tf_pixels = tf.io.decode_image(cut, channels=3).numpy().astype(float)
    assert np.abs(tf_pixels[-16:, -16:] - PIXELS[-16:, -16:]).mean() > 20
    assert np.all(tf_pixels[-8:, -8:] == 128)  # libjpeg's gray fill
    assert check_image(write(tmp_path, "cut.jpg", cut)).problem == "truncated"


@pytest.mark.parametrize(
    "options", [{"quality": 90}, {"quality": 90, "progressive": True}, {"subsampling": 0}, {"optimize": True}]
)
def test_complete_jpegs_pass_also_padded_after_their_end_marker(tmp_path, options):
    whole = encoded("JPEG", **options)
    assert check_image(write(tmp_path, "whole.jpg", whole)).problem == ""
    assert check_image(write(tmp_path, "padded.jpg", whole + b"\0" * 300)).problem == ""


@pytest.mark.parametrize("fix_crc", [False, True])
def test_a_png_with_a_corrupt_data_chunk_is_skipped(tmp_path, fix_crc):
    data = corrupt_png_data(fix_crc)
    assert not tf_decodes(data)  # the reference: TensorFlow refuses it ("Invalid PNG data")
    check = check_image(write(tmp_path, "bad.png", data))
    assert check.problem == "corrupt_data", check
    assert ("CRC" in check.detail) != fix_crc


def test_a_truncated_bmp_is_skipped(tmp_path):
    whole = encoded("BMP")
    cut = whole[: int(len(whole) * 0.6)]
    assert tf_decodes(whole) and not tf_decodes(cut)
    assert check_image(write(tmp_path, "whole.bmp", whole)).problem == ""
    assert check_image(write(tmp_path, "cut.bmp", cut)).problem == "truncated"


def test_a_fifo_and_a_folder_are_counted_and_never_opened(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    (tmp_path / "dir.jpg").mkdir()
    good = write(tmp_path, "good.jpg", encoded("JPEG"))
    records = [
        CaptionRecord(str(fifo), "a pipe", 0, "train"),
        CaptionRecord(str(tmp_path / "dir.jpg"), "a folder", 1, "train"),
        CaptionRecord(good, "a picture", 2, "train"),
    ]
    skips = SkipLog()
    with ThreadPoolExecutor(1) as pool:  # a reader blocked on the FIFO would never return
        kept = pool.submit(screen_records, records, skips).result(timeout=30)
    assert [record.image_ref for record in kept] == [good]
    assert dict(skips.skipped) == {"not_a_regular_file": 2}
    assert sorted(skips.examples["not_a_regular_file"]) == [f"{tmp_path / 'dir.jpg'}: a directory", f"{fifo}: a FIFO"]


def test_an_svg_is_skipped_with_the_reason(tmp_path):
    svg = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
        b'<rect width="4" height="4"/></svg>\n'
    )
    assert not tf_decodes(svg)  # the reference: the pipeline's decoder refuses SVG
    check = check_image(write(tmp_path, "drawing.svg", svg))
    assert check.problem == "svg: no rasteriser installed"
    assert check_image(write(tmp_path, "page.jpg", b"<html><body>not svg</body></html>")).problem == "not_an_image"
