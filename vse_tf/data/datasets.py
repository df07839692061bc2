"""One entry point for every dataset layout: ``read_records(data_config)`` -> records with splits.

``data.format`` picks the reader; ``data.annotations`` names its file (relative to
``data.data_dir``; ``{split}`` in it means one file per split, read for each of
train/val/test/restval that exists); ``data.image_root`` may hold ``{split}`` too.

Splits: records a layout gives no split are ``train``. When no record is ``val``,
``data.val_fraction`` of the training images become ``val``; when none is ``test``,
``data.test_fraction`` become ``test``. The choice hashes each image's path relative
to the folder all the dataset's images share, so it is the same on every machine and
run, and every caption of an image lands in the same split.

Each image belongs to one split and each image id names one file
(:func:`one_split_per_image`): otherwise one picture could be trained on and tested on.
Plain Python.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from vse_tf.config import DATA_FORMATS, DataConfig
from vse_tf.data.common import KNOWN_SPLITS, hashed_split
from vse_tf.data.readers.coco import read_coco_captions
from vse_tf.data.readers.folders import read_folder_records
from vse_tf.data.readers.karpathy import read_karpathy_json
from vse_tf.data.readers.openclipart import openclipart_records, read_openclipart
from vse_tf.data.readers.precomp import ROW_SEPARATOR, read_precomp
from vse_tf.data.readers.tabular import read_csv, read_jsonl
from vse_tf.data.readers.wikipedia import index_images, read_pair_list
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog

DEFAULT_ANNOTATIONS = {
    "coco": "captions_{split}.json",
    "wikipedia": "{split}set_txt_img_cat.list",
    "jsonl": "captions.jsonl",
    "csv": "captions.csv",
}


def read_records(data: DataConfig, skips: SkipLog | None = None) -> list[CaptionRecord]:
    """Every record of the dataset that ``data`` describes, each with its split.

    Args:
        data: the data config (``format``, ``data_dir``, ``annotations``, ``image_root``,
            ``val_fraction``, ``test_fraction``).
        skips: records the readers refuse (paths escaping the image root, missing
            documents) are counted here; without it they raise.

    Raises:
        FileNotFoundError, ValueError: from the readers (naming file and field/line).
    """
    if data.format not in DATA_FORMATS:
        raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {data.format!r}")
    records = _READERS[data.format](data, skips)
    if not records:
        raise ValueError(f"{data.data_dir}: no captions found for data.format={data.format!r}")
    return one_split_per_image(assign_splits(records, data.val_fraction, data.test_fraction), skips)


def one_split_per_image(records: Sequence[CaptionRecord], skips: SkipLog | None = None) -> list[CaptionRecord]:
    """The records, less those that would give one image two splits or one id two files.

    The first record of an image id fixes its file and split, the first record of a file
    its split. A later record with that id and another file is counted as
    ``duplicate_image_id``; one of the same image in another split as
    ``image_in_two_splits`` (the same id in two COCO files, a table row of an image
    already listed under another split).

    Raises:
        ValueError: a conflict, when no ``skips`` is given (the message names both).
    """
    by_id: dict[int, tuple[str, str]] = {}
    split_of_file: dict[str, str] = {}
    kept = []
    for record in records:
        first_ref, first_split = by_id.setdefault(record.image_id, (record.image_ref, record.split))
        file_split = split_of_file.setdefault(record.image_ref, record.split)
        if first_ref != record.image_ref:
            reason = "duplicate_image_id"
            problem = f"image id {record.image_id} names {first_ref} and {record.image_ref}"
        elif record.split != first_split or record.split != file_split:
            reason = "image_in_two_splits"
            problem = f"{record.image_ref} (image id {record.image_id}) is in split {file_split!r} and {record.split!r}"
        else:
            kept.append(record)
            continue
        if skips is None:
            raise ValueError(problem)
        skips.skip(reason, problem)
    return kept


def select_splits(records: Sequence[CaptionRecord], splits: Sequence[str]) -> list[CaptionRecord]:
    """The records of ``splits``, in order."""
    return [record for record in records if record.split in splits]


def assign_splits(records: Sequence[CaptionRecord], val_fraction: float, test_fraction: float) -> list[CaptionRecord]:
    """Unsplit records become ``train``; missing ``val``/``test`` splits are carved from train by hash."""
    records = [record if record.split else dataclasses.replace(record, split="train") for record in records]
    present = {record.split for record in records}
    val = val_fraction if "val" not in present else 0.0
    test = test_fraction if "test" not in present else 0.0
    if not val and not test:
        return records
    base = _common_folder([record.image_ref for record in records])
    result = []
    for record in records:
        if record.split == "train":
            record = dataclasses.replace(record, split=hashed_split(_relative_key(record.image_ref, base), val, test))
        result.append(record)
    return result


def _common_folder(image_refs: list[str]) -> str:
    folders = {os.path.dirname(ref.split(ROW_SEPARATOR)[0]) for ref in image_refs}
    return os.path.commonpath(sorted(folders)) if folders else ""


def _relative_key(image_ref: str, base: str) -> str:
    return os.path.relpath(image_ref, base) if base else image_ref


def _per_split(template: str) -> list[tuple[str, str]]:
    """``[(split, file name)]``: each known split for a ``{split}`` template, else ``("", template)``."""
    if "{split}" in template:
        return [(split, template.format(split=split)) for split in KNOWN_SPLITS]
    return [("", template)]


def _image_root(data: DataConfig, split: str) -> Path:
    root = str(data.resolved_image_root())
    if "{split}" in root:
        if not split:
            raise ValueError(f"data.image_root={data.image_root!r} has {{split}} but data.annotations has not")
        root = root.format(split=split)
    return Path(root)


def _annotation_files(data: DataConfig) -> list[tuple[str, Path]]:
    template = data.annotations or DEFAULT_ANNOTATIONS[data.format]
    files = [(split, Path(data.data_dir) / name) for split, name in _per_split(template)]
    existing = [(split, path) for split, path in files if path.exists()]
    if not existing:
        raise FileNotFoundError(f"{Path(data.data_dir) / template}: no annotation file (data.format={data.format!r})")
    return existing


def _read_karpathy(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    path = Path(data.data_dir) / data.annotations if data.annotations else data.json_path()
    return read_karpathy_json(path, data.resolved_image_root(), KNOWN_SPLITS, skips)


def _read_coco(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    records = []
    for split, path in _annotation_files(data):
        records += read_coco_captions(path, _image_root(data, split), split, skips)
    return records


def _read_precomp(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    records: list[CaptionRecord] = []
    for split in KNOWN_SPLITS:
        offset = 1 + max((record.image_id for record in records), default=-1)
        records += read_precomp(data.data_dir, split, offset)
    return records


def _read_folders(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    descriptions = Path(data.data_dir) / data.annotations if data.annotations else None
    return read_folder_records(data.data_dir, descriptions, skips)


def _read_wikipedia(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    records = []
    indexes: dict[Path, dict[str, str]] = {}
    for split, path in _annotation_files(data):
        root = _image_root(data, split)
        if root not in indexes:
            indexes[root] = index_images(root, skips)
        images = indexes[root]
        records += read_pair_list(path, Path(data.data_dir) / "texts", images, split, skips)
    return records


def _read_openclipart(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    """``data.data_dir`` is the tree holding ``png/`` and ``svg/`` (Debian: /usr/share/openclipart)."""
    drawings, report = read_openclipart(data.data_dir, data.val_fraction, data.test_fraction, data.max_image_pixels)
    records, without_text = openclipart_records(drawings)
    if skips is not None:
        skips.merge(report)
        for reason, count in without_text.items():
            skips.skip(reason, data.data_dir, count)
    return records


def _read_table(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    reader = read_jsonl if data.format == "jsonl" else read_csv
    records: list[CaptionRecord] = []
    for split, path in _annotation_files(data):
        offset = 1 + max((record.image_id for record in records), default=-1)  # ids unique across files
        for record in reader(path, _image_root(data, split), skips):
            records.append(dataclasses.replace(record, image_id=record.image_id + offset, split=record.split or split))
    return records


def _read_tfrecord(data: DataConfig, skips: SkipLog | None) -> list[CaptionRecord]:
    """Shards written by :mod:`vse_tf.data.shards` (TensorFlow is imported only here)."""
    from vse_tf.data.readers.tfrecord import read_shard_records

    return read_shard_records(data.data_dir)


_READERS = {
    "karpathy": _read_karpathy,
    "coco": _read_coco,
    "precomp": _read_precomp,
    "folders": _read_folders,
    "wikipedia": _read_wikipedia,
    "jsonl": _read_table,
    "csv": _read_table,
    "openclipart": _read_openclipart,
    "tfrecord": _read_tfrecord,
}
