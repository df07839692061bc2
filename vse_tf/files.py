"""Atomic writes: every file or folder the package writes appears whole or not at all.

A writer fills a uniquely named temporary beside the target (same folder, so the final
``os.replace`` is atomic) and renames it; a failure removes the temporary. Temporaries
start with :data:`PARTIAL_PREFIX`, so that :func:`remove_stale_partials` can clear what a
killed process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARTIAL_PREFIX = ".partial-"


def partial_path(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path``, unique across processes and calls; keeps the suffix."""
    path = Path(path)
    return path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write a file or folder at; renames it to ``path`` on success.

    On an exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        _remove(temporary)


def write_text_atomic(path: str | os.PathLike, text: str, errors: str = "strict") -> None:
    """Writes ``text`` as UTF-8 to ``path`` atomically.

    ``errors`` is the encoder's error handler (``backslashreplace`` keeps surrogates from
    undecodable input visible instead of failing).
    """
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8", errors=errors)


def write_json_atomic(path: str | os.PathLike, document: Any, **dumps: Any) -> None:
    """Writes ``document`` as JSON (``json.dumps`` keyword arguments, default indent 2) atomically."""
    dumps.setdefault("indent", 2)
    write_text_atomic(path, json.dumps(document, **dumps) + "\n")


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporaries a killed writer left in ``folder``; returns what it removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(f"{PARTIAL_PREFIX}*"))
    for path in stale:
        _remove(path)
    return stale


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
