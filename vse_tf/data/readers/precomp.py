"""Reader for VSE++ precomputed features: ``{split}_ims.npy`` + ``{split}_caps.txt``.

``{split}_ims.npy`` is ``float [N, F]``; ``{split}_caps.txt`` has one caption per line.
With ``K * N`` captions, caption ``i`` belongs to row ``i // K`` (VSE++: five per image);
with as many captions as rows, each row is its own image. VSE++ names the validation
split ``dev``; ``val`` falls back to it. Records point at rows: ``image_ref`` is
``"<path of the .npy>#<row>"``. NumPy only, no TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vse_tf.data.common import read_lines
from vse_tf.data.records import CaptionRecord

SPLIT_FILE_NAMES = {"train": ("train",), "val": ("val", "dev"), "test": ("test",), "restval": ("restval",)}
ROW_SEPARATOR = "#"


def precomp_files(data_dir: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """``({split}_ims.npy, {split}_caps.txt)`` in ``data_dir``, or None when the split is absent."""
    for name in SPLIT_FILE_NAMES.get(split, (split,)):
        images, captions = Path(data_dir) / f"{name}_ims.npy", Path(data_dir) / f"{name}_caps.txt"
        if images.exists() or captions.exists():
            if not (images.exists() and captions.exists()):
                missing = captions if images.exists() else images
                raise FileNotFoundError(f"{missing}: missing (split {split!r} needs both files)")
            return images, captions
    return None


def read_precomp(data_dir: str | os.PathLike, split: str, image_id_offset: int = 0) -> list[CaptionRecord]:
    """Reads one split's captions; ids are ``image_id_offset + row``.

    Raises:
        FileNotFoundError: the split has only one of its two files.
        ValueError: the features are not 2-D, or the caption count is not a multiple of
            the row count (the message names both files and the counts).
    """
    files = precomp_files(data_dir, split)
    if files is None:
        return []
    images_path, captions_path = files
    rows = _row_count(images_path)
    captions = read_lines(captions_path)
    if captions and captions[-1] == "":
        captions.pop()
    if rows == 0 or len(captions) % rows:
        raise ValueError(
            f"{captions_path}: {len(captions)} captions for the {rows} rows of {images_path}; "
            "expected K captions per row (caption i belongs to row i // K)"
        )
    per_row = len(captions) // rows
    return [
        CaptionRecord(
            f"{images_path}{ROW_SEPARATOR}{number // per_row}", caption, image_id_offset + number // per_row, split
        )
        for number, caption in enumerate(captions)
    ]


def _row_count(path: Path) -> int:
    try:
        features = np.load(path, mmap_mode="r")
    except ValueError as error:
        raise ValueError(f"{path}: not a .npy array: {error}") from error
    if features.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D [images, features] array, got shape {features.shape}")
    return int(features.shape[0])


def is_row_ref(image_ref: str) -> bool:
    """Whether ``image_ref`` names a row of a ``.npy`` file (``path.npy#row``)."""
    path, separator, row = image_ref.rpartition(ROW_SEPARATOR)
    return bool(separator) and path.endswith(".npy") and row.isdigit()


def load_feature_rows(image_refs: Sequence[str], feature_dim: int) -> np.ndarray:
    """``float32 [len(image_refs), feature_dim]``: the rows named by ``path.npy#row`` refs.

    Raises:
        ValueError: a file's width is not ``feature_dim`` (names the file).
    """
    output = np.empty((len(image_refs), feature_dim), np.float32)
    by_file: dict[str, list[tuple[int, int]]] = {}
    for position, ref in enumerate(image_refs):
        path, _, row = ref.rpartition(ROW_SEPARATOR)
        by_file.setdefault(path, []).append((position, int(row)))
    for path, pairs in by_file.items():
        features = np.load(path, mmap_mode="r")
        if features.ndim != 2 or features.shape[1] != feature_dim:
            raise ValueError(f"{path}: expected [rows, {feature_dim}] (image.feature_dim), got {features.shape}")
        positions, rows = (np.array(column) for column in zip(*pairs))
        output[positions] = features[rows]
    return output
