"""Screening records before the tf.data pipeline: unusable ones are skipped and counted.

Captions: empty (after stripping) -> skipped (``empty_caption``); invalid UTF-8 bytes
(kept as surrogates by the readers) -> replaced with U+FFFD and counted as repaired.

Images, each distinct file once, in a thread pool. Only regular files are opened (a FIFO
would block the reader forever, a device has no end). What the file's structure can
prove is checked from its bytes (the end marker; every PNG chunk's CRC); the rest is
proved by a full decode with Pillow: a JPEG's scan data is decoded twice, as it is and
with filler bytes before its end marker, and the two must agree, which shows the file
holds every block (a JPEG cut short and given an end marker decodes to gray otherwise).

=======================  ===========================================================
reason                   meaning
=======================  ===========================================================
``missing_file``         no such file
``not_a_regular_file``   a folder, FIFO, device or socket (never opened)
``unreadable_file``      the file exists but cannot be read (permissions, I/O error)
``empty_file``           zero bytes
``not_an_image``         not JPEG/PNG/GIF/BMP by its first bytes (e.g. text named .jpg)
``svg: no rasteriser...``  an SVG document: TensorFlow cannot decode it (the reason says
                         whether cairosvg or resvg-py is installed)
``unreadable_header``    the header does not parse
``too_large``            the header declares more than ``max_image_pixels`` pixels
``truncated``            the data ends early: no end marker, fewer pixel bytes than the
                         header declares, or JPEG scan data that stops before the last block
``corrupt_data``         the pixel data does not decode (a PNG chunk's CRC, a broken
                         compressed stream)
=======================  ===========================================================

Grayscale, palette, CMYK and alpha images are kept (TensorFlow decodes them to RGB;
the alpha channel is dropped) and counted under ``repaired`` as ``<mode>_to_rgb``.
Plain Python + Pillow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from vse_tf.data.common import TEXT_ERRORS
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS, PNG_MAGIC, image_format
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog

# End markers and how far from the end of the file they may sit (some writers pad).
_END_MARKERS = {"JPEG": (b"\xff\xd9", 256), "PNG": (b"IEND", 256), "GIF": (b"\x3b", 256)}
_RGB_MODES = {"RGB", "YCbCr"}
_JPEG_END = b"\xff\xd9"
# Bytes put before a JPEG's end marker for the second decode: no 0xFF (so no marker), and
# varied bits (so that they decode to blocks unlike the gray that libjpeg fills in).
_JPEG_FILLER = bytes(range(1, 255))
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """The verdict on one image file: ``problem`` (a skip reason) or ``""``, and its mode."""

    problem: str
    mode: str = ""
    detail: str = ""


def screen_records(
    records: Sequence[CaptionRecord],
    skips: SkipLog,
    check_images: bool = True,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    workers: int = 16,
) -> list[CaptionRecord]:
    """The usable records, in order; everything dropped or repaired is counted in ``skips``.

    Args:
        records: reader output.
        skips: where skipped/repaired records are counted (by reason, with the file).
        check_images: check image files (off for precomputed features).
        max_image_pixels: larger images (by their header) are skipped as ``too_large``.
        workers: threads checking image files (Pillow decodes outside the GIL).
    """
    kept = _screen_captions(records, skips)
    if not check_images:
        return kept
    paths = list(dict.fromkeys(record.image_ref for record in kept))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
        checks = dict(zip(paths, pool.map(lambda path: check_image(path, max_image_pixels), paths)))
    usable = []
    for record in kept:
        check = checks[record.image_ref]
        if check.problem:
            skips.skip(check.problem, f"{record.image_ref}{': ' + check.detail if check.detail else ''}")
            continue
        if check.mode not in _RGB_MODES:
            skips.repair(f"{check.mode.lower()}_to_rgb", record.image_ref)
        usable.append(record)
    return usable


def _screen_captions(records: Sequence[CaptionRecord], skips: SkipLog) -> list[CaptionRecord]:
    kept = []
    for record in records:
        where = f"{record.image_ref}: caption {record.caption[:40]!r}"
        if not record.caption.strip():
            skips.skip("empty_caption", f"{record.image_ref}: empty caption")
            continue
        repaired = record.caption.encode("utf-8", errors=TEXT_ERRORS).decode("utf-8", errors="replace")
        if repaired != record.caption:
            skips.repair("invalid_utf8_replaced", where.encode("utf-8", errors="replace").decode("utf-8"))
            record = dataclasses.replace(record, caption=repaired)
        kept.append(record)
    return kept


def check_image(path: str, max_image_pixels: int = MAX_IMAGE_PIXELS) -> ImageCheck:
    """Checks one image file: a regular file, then its bytes (see the module docstring)."""
    try:
        data = _read_regular_file(path)
    except FileNotFoundError:
        return ImageCheck("missing_file")
    except _NotARegularFile as error:
        return ImageCheck("not_a_regular_file", detail=str(error))
    except OSError as error:
        return ImageCheck("unreadable_file", detail=f"{type(error).__name__}: {error.strerror or error}")
    return check_image_bytes(data, max_image_pixels)


def check_image_bytes(data: bytes, max_image_pixels: int = MAX_IMAGE_PIXELS) -> ImageCheck:
    """Checks an encoded image: format, header, size limit, structure, full decode."""
    if not data:
        return ImageCheck("empty_file")
    kind = image_format(data[:16])
    if kind is None and is_svg(data):
        return ImageCheck(_svg_reason(), detail="TensorFlow decodes JPEG/PNG/GIF/BMP only")
    if kind is None:
        return ImageCheck("not_an_image", detail=f"starts with {data[:8]!r}")
    tail = data[-4096:]
    try:
        with _quiet(), Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            mode = image.mode
    except Image.DecompressionBombError as error:
        return ImageCheck("too_large", detail=str(error))
    except Exception as error:  # noqa: BLE001 - any parse failure means the header is unusable
        reason = "unreadable_header" if _has_end_marker(kind, tail) else "truncated"
        return ImageCheck(reason, detail=f"{type(error).__name__}: {error}")
    if width * height > max_image_pixels:
        return ImageCheck("too_large", detail=f"{width}x{height} pixels, the limit is {max_image_pixels}")
    # A JPEG/GIF padded after its end marker is fine if it decodes in full (below); a PNG
    # without IEND is not (TensorFlow refuses it even where Pillow is lenient).
    problem = png_structure_problem(data) if kind == "PNG" else None
    if problem is None:
        problem = _decode_problem(data, kind)
    if problem is not None:
        return problem
    return ImageCheck("", mode=mode)


class _NotARegularFile(OSError):
    pass


def _read_regular_file(path: str) -> bytes:
    """The file's bytes; a folder, FIFO, device or socket is refused before it is opened.

    The ``fstat`` after opening (non-blocking) closes the gap in which a regular file
    could be swapped for a FIFO between the ``stat`` and the ``open``.
    """
    _refuse_unless_regular(os.stat(path).st_mode)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(descriptor, "rb") as handle:
        _refuse_unless_regular(os.fstat(handle.fileno()).st_mode)
        return handle.read()


def _refuse_unless_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    raise _NotARegularFile(kind)


def png_structure_problem(data: bytes) -> ImageCheck | None:
    """Walks a PNG's chunks: each must fit in the file and match its CRC, up to ``IEND``.

    libpng (TensorFlow's decoder) refuses a critical chunk with a bad CRC; Pillow does not
    check the CRCs of image data, so this is checked here. None when the structure holds.
    """
    position = len(PNG_MAGIC)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            return ImageCheck("truncated", detail=f"PNG chunk {kind!r} at byte {position} runs past the end")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[position + 4 : end - 4]) != crc:
            return ImageCheck("corrupt_data", detail=f"PNG chunk {kind!r} at byte {position}: CRC mismatch")
        if kind == b"IEND":
            return None
        position = end
    return ImageCheck("truncated", detail="PNG without its IEND chunk")


def _decode_problem(data: bytes, kind: str) -> ImageCheck | None:
    """Decodes every pixel; for a JPEG, also proves the scan data holds every block."""
    try:
        pixels = _decode(data, kind)
        if kind == "JPEG" and not _jpeg_scan_complete(data, pixels):
            return ImageCheck("truncated", detail="JPEG scan data ends before the last block")
    except Exception as error:  # noqa: BLE001 - any decode failure means unusable
        reason = "truncated" if "truncated" in str(error) else "corrupt_data"
        return ImageCheck(reason, detail=f"{kind}: {type(error).__name__}: {error}")
    return None


def _decode(data: bytes, kind: str) -> bytes:
    """The decoded pixels. A baseline JPEG is decoded at 1/8 scale (libjpeg still reads
    every coefficient, and each block's DC term shows whether it was in the file); a
    progressive one in full, since its later scans carry only AC terms."""
    with _quiet(), Image.open(io.BytesIO(data)) as image:
        if kind == "JPEG" and not image.info.get("progressive"):
            image.draft(image.mode, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
        image.load()
        return image.tobytes()


def _jpeg_scan_complete(data: bytes, pixels: bytes) -> bool:
    """Whether the blocks decoded from ``data`` came from the file, not libjpeg's fill.

    libjpeg meets an end marker inside the scan data with a warning and fills the missing
    blocks with gray; with filler bytes before that marker they decode to something else.
    A complete file decodes the same both ways (the filler lies after its last block).
    """
    end = data.rfind(_JPEG_END)
    if end < 0:
        return True  # no end marker at all: the decode above would have failed if blocks were missing
    return _decode(data[:end] + _JPEG_FILLER + _JPEG_END, "JPEG") == pixels


@contextlib.contextmanager
def _quiet():
    """Pillow's decompression-bomb warning is silenced: the size limit is checked here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def is_svg(data: bytes) -> bool:
    """Whether ``data`` is an SVG document (XML whose first kilobyte opens an ``<svg`` element)."""
    start = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith((b"<?xml", b"<svg", b"<!DOCTYPE svg", b"<!--")) and b"<svg" in data[:4096]


def _svg_reason() -> str:
    """SVGs are not rasterised by the pipeline; the reason says whether a rasteriser is even there."""
    if any(importlib.util.find_spec(name) for name in ("cairosvg", "resvg_py")):
        return "svg: not rasterised by the pipeline"
    return "svg: no rasteriser installed"


def _has_end_marker(image_format: str, tail: bytes) -> bool:
    marker = _END_MARKERS.get(image_format)
    return marker is None or marker[0] in tail[-marker[1] :]
