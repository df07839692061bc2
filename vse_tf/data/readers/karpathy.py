"""Reader for Karpathy-split JSON (``dataset_flickr8k.json``, ``dataset_coco.json``, ...).

Layout: ``{"images": [{"filename", "filepath"?, "split", "imgid"?, "cocoid"?,
"sentences": [{"raw", "tokens"}], "category"?}]}``; image files live at
``image_root / filepath / filename``.
"""

from __future__ import annotations

import os
from pathlib import Path

from vse_tf.data.common import KNOWN_SPLITS, PathEscapeError, check_split, field, load_json, resolve_image
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog

__all__ = ["KNOWN_SPLITS", "read_karpathy_json"]


def read_karpathy_json(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    splits: tuple[str, ...] = KNOWN_SPLITS,
    skips: SkipLog | None = None,
) -> list[CaptionRecord]:
    """Reads the captions of the requested splits.

    Args:
        json_path: the ``dataset_<name>.json`` file.
        image_root: folder that ``filepath/filename`` are relative to.
        splits: splits to keep (``("train", "restval")`` adds restval to training);
            records keep the file's order.
        skips: when given, images whose path escapes ``image_root`` (``outside_image_root``)
            and images whose id an earlier image has (``duplicate_image_id``) are skipped
            with their captions and counted there, instead of raising.

    Returns:
        One ``CaptionRecord`` per sentence.

    Raises:
        FileNotFoundError: the JSON file is missing.
        ValueError: the JSON is malformed (the message names the file and the field), or,
            without ``skips``, a path escapes the image root or an image id repeats (in
            any split: one id in two splits would put one image in train and test).
    """
    json_path = Path(json_path)
    root = Path(image_root)
    document = load_json(json_path)
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{json_path}: field 'images' must be a list")
    records: list[CaptionRecord] = []
    first_position: dict[int, int] = {}
    for position, image in enumerate(images):
        where = f"{json_path}: images[{position}]"
        split = check_split(field(image, "split", str, where), f"{where}.split")
        sentences = field(image, "sentences", list, where)
        image_id = _image_id(image, position, where)
        if image_id in first_position:
            problem = f"{where}: duplicate image id {image_id} (images[{first_position[image_id]}] has it)"
            if skips is None:
                raise ValueError(problem)
            if split in splits:
                skips.skip("duplicate_image_id", problem, records=len(sentences))
            continue
        first_position[image_id] = position
        if split not in splits:
            continue
        try:
            image_ref = _image_path(root, image, where)
        except PathEscapeError as error:
            if skips is None:
                raise
            skips.skip("outside_image_root", str(error), records=len(sentences))
            continue
        category = image.get("category", "")
        for number, sentence in enumerate(sentences):
            caption = field(sentence, "raw", str, f"{where}.sentences[{number}]")
            records.append(CaptionRecord(image_ref, caption, image_id, split, str(category)))
    return records


def _image_id(image: dict, position: int, where: str) -> int:
    for key in ("cocoid", "imgid"):
        if key in image:
            value = image[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{where}.{key}: expected an integer id, got {value!r}")
            return value
    return position


def _image_path(root: Path, image: dict, where: str) -> str:
    filename = field(image, "filename", str, where)
    filepath = image.get("filepath", "")
    if not isinstance(filepath, str):
        raise ValueError(f"{where}.filepath: expected str, got {type(filepath).__name__}")
    return resolve_image(root, os.path.join(filepath, filename), where)
