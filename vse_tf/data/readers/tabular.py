"""Readers for generic caption tables: JSONL or CSV rows of ``image, caption[, split]``.

JSONL: one object per line, ``{"image": "dogs/1.jpg", "caption": "...", "split": "train"}``.
CSV: a header row naming the columns ``image,caption[,split]`` (any order, other
columns ignored). ``image`` is relative to the image root; rows of one image share an
id (numbered in order of first appearance); a missing or empty ``split`` leaves the
record unsplit (``""``). Plain Python.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

from vse_tf.data.common import PathEscapeError, check_split, field, read_lines, resolve_image
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog

REQUIRED_COLUMNS = ("image", "caption")


def read_jsonl(
    path: str | os.PathLike, image_root: str | os.PathLike, skips: SkipLog | None = None
) -> list[CaptionRecord]:
    """Reads a JSONL caption table (see the module docstring).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line is not a JSON object with string ``image`` and ``caption``, or
            has an unknown split (the message names file, line and field); a path
            escaping the root without ``skips``.
    """
    path = Path(path)
    return _records(_jsonl_rows(path), Path(image_root), skips)


def read_csv(
    path: str | os.PathLike, image_root: str | os.PathLike, skips: SkipLog | None = None
) -> list[CaptionRecord]:
    """Reads a CSV caption table with a header row (see the module docstring).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the header lacks ``image`` or ``caption``, a row has too few cells, or
            an unknown split (the message names file, line and column).
    """
    path = Path(path)
    return _records(_csv_rows(path), Path(image_root), skips)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, str, str, str]]:
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: invalid JSON at column {error.colno}: {error.msg}") from error
        image = field(row, "image", str, where)
        caption = field(row, "caption", str, where)
        split = row.get("split") or ""
        if not isinstance(split, str):
            raise ValueError(f"{where}.split: expected str, got {type(split).__name__}")
        yield where, image, caption, split


def _csv_rows(path: Path) -> Iterator[tuple[str, str, str, str]]:
    lines = read_lines(path)
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: empty file, expected a header row 'image,caption[,split]'")
    header = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{path}: line 1: header lacks column(s) {missing}, expected 'image,caption[,split]'")
    column = {name: header.index(name) for name in (*REQUIRED_COLUMNS, "split") if name in header}
    for cells in reader:
        number = reader.line_num
        if not cells:
            continue
        where = f"{path}: line {number}"
        needed = max(column["image"], column["caption"])
        if len(cells) <= needed:
            raise ValueError(f"{where}: {len(cells)} cells, the header needs column {header[needed]!r}")
        split = cells[column["split"]].strip() if "split" in column and column["split"] < len(cells) else ""
        yield where, cells[column["image"]], cells[column["caption"]], split


def _records(rows: Iterator[tuple[str, str, str, str]], root: Path, skips: SkipLog | None) -> list[CaptionRecord]:
    records: list[CaptionRecord] = []
    ids: dict[str, int] = {}
    for where, image, caption, split in rows:
        if split:
            check_split(split, f"{where}.split")
        try:
            path = resolve_image(root, image, f"{where}.image")
        except PathEscapeError as error:
            if skips is None:
                raise
            skips.skip("outside_image_root", str(error))
            continue
        image_id = ids.setdefault(path, len(ids))
        records.append(CaptionRecord(path, caption, image_id, split))
    return records
