"""Reader for Karpathy-split JSON (``dataset_flickr8k.json``, ``dataset_coco.json``, ...).

Layout: ``{"images": [{"filename", "filepath"?, "split", "imgid"?, "cocoid"?,
"sentences": [{"raw", "tokens"}], "category"?}]}``; image files live at
``image_root / filepath / filename``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vse_tf.data.records import CaptionRecord

KNOWN_SPLITS = ("train", "val", "test", "restval")


def read_karpathy_json(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    splits: tuple[str, ...] = KNOWN_SPLITS,
) -> list[CaptionRecord]:
    """Reads the captions of the requested splits.

    Args:
        json_path: the ``dataset_<name>.json`` file.
        image_root: folder that ``filepath/filename`` are relative to.
        splits: splits to keep; records keep the file's order.

    Returns:
        One ``CaptionRecord`` per sentence.

    Raises:
        FileNotFoundError: the JSON file is missing.
        ValueError: the JSON is malformed; the message names the file and the field.
    """
    json_path = Path(json_path)
    root = Path(image_root)
    document = _load_json(json_path)
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{json_path}: field 'images' must be a list")
    records: list[CaptionRecord] = []
    for position, image in enumerate(images):
        where = f"{json_path}: images[{position}]"
        split = _field(image, "split", str, where)
        if split not in KNOWN_SPLITS:
            raise ValueError(f"{where}.split: unknown split {split!r}, expected one of {KNOWN_SPLITS}")
        if split not in splits:
            continue
        image_ref = _image_path(root, image, where)
        image_id = _image_id(image, position, where)
        category = image.get("category", "")
        for number, sentence in enumerate(_field(image, "sentences", list, where)):
            caption = _field(sentence, "raw", str, f"{where}.sentences[{number}]")
            records.append(CaptionRecord(image_ref, caption, image_id, split, str(category)))
    return records


def _load_json(path: Path) -> object:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from error


def _field(node: object, name: str, kind: type, where: str):
    if not isinstance(node, dict) or name not in node:
        raise ValueError(f"{where}: missing field '{name}'")
    value = node[name]
    if not isinstance(value, kind):
        raise ValueError(f"{where}.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _image_id(image: dict, position: int, where: str) -> int:
    for key in ("cocoid", "imgid"):
        if key in image:
            value = image[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{where}.{key}: expected an integer id, got {value!r}")
            return value
    return position


def _image_path(root: Path, image: dict, where: str) -> str:
    filename = _field(image, "filename", str, where)
    filepath = image.get("filepath", "")
    if not isinstance(filepath, str):
        raise ValueError(f"{where}.filepath: expected str, got {type(filepath).__name__}")
    path = (root / filepath / filename).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{where}: image path {filepath!r}/{filename!r} escapes the image root {root}")
    return str(path)
