"""Facts about image files, in one place: the suffixes read, the magic bytes, the size limit.

Plain Python: readers, screening, feature extraction and the serving decoder all take
these from here.
"""

from __future__ import annotations

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Images whose header declares more pixels than this are refused (decompression bombs).
MAX_IMAGE_PIXELS = 40_000_000
# A serving request whose images declare more pixels than this in all (a GIF: its screen
# plus every frame) is refused before any is decoded.
MAX_BATCH_PIXELS = 400_000_000
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGICS = (b"GIF87a", b"GIF89a")
BMP_MAGIC = b"BM"
# Format name by leading bytes; the serving decoder numbers them in this order (1 = JPEG).
FORMAT_MAGICS = {"JPEG": (JPEG_MAGIC,), "PNG": (PNG_MAGIC,), "GIF": GIF_MAGICS, "BMP": (BMP_MAGIC,)}


def image_format(head: bytes) -> str | None:
    """``JPEG``/``PNG``/``GIF``/``BMP`` from a file's first bytes, or None."""
    for name, magics in FORMAT_MAGICS.items():
        if any(head.startswith(magic) for magic in magics):
            return name
    return None
