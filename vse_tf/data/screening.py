"""Screening records before the tf.data pipeline: unusable ones are skipped and counted.

Captions: empty (after stripping) -> skipped (``empty_caption``); invalid UTF-8 bytes
(kept as surrogates by the readers) -> replaced with U+FFFD and counted as repaired.

Images, each distinct file once, in a thread pool: the checks read the file's header
and its last bytes, not the pixels, so a healthy image costs two small reads.

=====================  ===========================================================
reason                 meaning
=====================  ===========================================================
``missing_file``       no such file
``empty_file``         zero bytes
``not_an_image``       not JPEG/PNG/GIF/BMP by its first bytes (e.g. text named .jpg)
``unreadable_header``  the header does not parse
``too_large``          the header declares more than ``max_image_pixels`` pixels
``truncated``          the end marker is missing and a full decode fails
=====================  ===========================================================

Grayscale, palette, CMYK and alpha images are kept (TensorFlow decodes them to RGB;
the alpha channel is dropped) and counted under ``repaired`` as ``<mode>_to_rgb``.
Plain Python + Pillow.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from vse_tf.data.common import TEXT_ERRORS
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS, image_format
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog

# End markers and how far from the end of the file they may sit (some writers pad).
_END_MARKERS = {"JPEG": (b"\xff\xd9", 256), "PNG": (b"IEND", 256), "GIF": (b"\x3b", 256)}
_RGB_MODES = {"RGB", "YCbCr"}


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
        workers: threads reading image headers.
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
    """Checks one image file by its header and end marker (see the module docstring)."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
            handle.seek(max(0, size - 4096))
            tail = handle.read()
    except FileNotFoundError:
        return ImageCheck("missing_file")
    except OSError as error:
        return ImageCheck("missing_file", detail=str(error))
    if size == 0:
        return ImageCheck("empty_file")
    kind = image_format(head)
    if kind is None:
        return ImageCheck("not_an_image", detail=f"starts with {head[:8]!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                mode = image.mode
    except Image.DecompressionBombError as error:
        return ImageCheck("too_large", detail=str(error))
    except Exception as error:  # noqa: BLE001 - any parse failure means the header is unusable
        reason = "unreadable_header" if _has_end_marker(kind, tail) else "truncated"
        return ImageCheck(reason, detail=f"{type(error).__name__}: {error}")
    if width * height > max_image_pixels:
        return ImageCheck("too_large", detail=f"{width}x{height} pixels, the limit is {max_image_pixels}")
    # A JPEG/GIF padded after its end marker is fine if it decodes in full; a PNG without
    # IEND is not (TensorFlow refuses it even where Pillow is lenient).
    if not _has_end_marker(kind, tail) and (kind == "PNG" or not _decodes_fully(path)):
        return ImageCheck("truncated", detail=f"{kind} without its end marker")
    return ImageCheck("", mode=mode)


def _has_end_marker(image_format: str, tail: bytes) -> bool:
    marker = _END_MARKERS.get(image_format)
    return marker is None or marker[0] in tail[-marker[1] :]


def _decodes_fully(path: str) -> bool:
    """The slow check, only for files whose end marker is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
        return True
    except Exception:  # noqa: BLE001 - any decode failure means unusable
        return False
