"""Helpers shared by the readers: JSON/text loading, field checks, image paths, hashed splits.

Plain Python (no TensorFlow). Every error names the file and the field or line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

KNOWN_SPLITS = ("train", "val", "test", "restval")
# Text is decoded with ``surrogateescape`` so that invalid UTF-8 bytes survive reading and
# are repaired (and counted) by :mod:`vse_tf.data.screening` rather than failing a reader.
TEXT_ERRORS = "surrogateescape"


class PathEscapeError(ValueError):
    """An image path in a dataset file points outside the image root."""


def load_json(path: Path) -> object:
    """Parses a JSON file; invalid UTF-8 bytes inside strings are kept as surrogates.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: invalid JSON; the message names the file, line and column.
    """
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from error


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (invalid bytes kept as surrogates), without newlines."""
    return _read_text(path).splitlines()


def _read_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path.read_bytes().decode("utf-8", errors=TEXT_ERRORS).removeprefix("\ufeff")


def field(node: object, name: str, kind: type | tuple[type, ...], where: str):
    """``node[name]``, checked to be of ``kind``; errors say ``where.name``."""
    if not isinstance(node, dict) or name not in node:
        raise ValueError(f"{where}: missing field '{name}'")
    value = node[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{where}.{name}: expected {expected}, got {type(value).__name__}")
    return value


def resolve_image(root: Path, relative: str, where: str) -> str:
    """The absolute path of ``root / relative``, refused when it leaves ``root``.

    Raises:
        PathEscapeError: the path escapes the root (``../``, absolute paths, symlinked
            folders are resolved first); the message names ``where`` and the path.
    """
    resolved_root = Path(root).resolve()
    path = (resolved_root / relative).resolve()
    if not path.is_relative_to(resolved_root):
        raise PathEscapeError(f"{where}: image path {relative!r} escapes the image root {root}")
    return str(path)


def check_split(split: str, where: str) -> str:
    if split not in KNOWN_SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}, expected one of {KNOWN_SPLITS}")
    return split


def hashed_fraction(key: str) -> float:
    """A stable number in ``[0, 1)`` from ``key`` (the same on every machine and run)."""
    digest = hashlib.sha1(key.encode("utf-8", errors=TEXT_ERRORS)).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hashed_split(key: str, val_fraction: float, test_fraction: float) -> str:
    """The one split rule: ``val`` below ``val_fraction``, then ``test``, else ``train``, by
    :func:`hashed_fraction` of ``key``."""
    draw = hashed_fraction(key)
    if draw < val_fraction:
        return "val"
    if draw < val_fraction + test_fraction:
        return "test"
    return "train"
