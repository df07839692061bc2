"""Reader for COCO captions JSON (``annotations/captions_train2014.json``) + an image folder.

Layout: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``;
image files live at ``image_root / file_name``. A file holds one split (COCO ships
``captions_train2014.json`` and ``captions_val2014.json``); which split a file stands
for is the caller's choice (see :func:`vse_tf.data.datasets.read_records`).
"""

from __future__ import annotations

import os
from pathlib import Path

from vse_tf.data.common import PathEscapeError, field, load_json, resolve_image
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog


def read_coco_captions(
    json_path: str | os.PathLike, image_root: str | os.PathLike, split: str, skips: SkipLog | None = None
) -> list[CaptionRecord]:
    """Reads every caption of a COCO captions file as records of ``split``.

    Records follow the order of ``annotations``; ``image_id`` is COCO's image id. Images
    without captions are left out; a caption whose ``image_id`` is not in ``images`` is
    an error.

    Args:
        json_path: ``captions_*.json``.
        image_root: folder holding the files named by ``images[].file_name``.
        split: the split these records belong to (``""`` for unsplit).
        skips: when given, images whose path escapes the root are skipped and counted
            (``outside_image_root``) instead of raising.

    Raises:
        FileNotFoundError: the JSON file is missing.
        ValueError: malformed file (names the file and field), duplicate image ids, or a
            path escaping the root without ``skips``.
    """
    json_path = Path(json_path)
    document = load_json(json_path)
    where = str(json_path)
    images = field(document, "images", list, where)
    annotations = field(document, "annotations", list, where)
    paths: dict[int, str | None] = {}
    for position, image in enumerate(images):
        image_where = f"{json_path}: images[{position}]"
        image_id = field(image, "id", int, image_where)
        if image_id in paths:
            raise ValueError(f"{image_where}.id: duplicate image id {image_id}")
        paths[image_id] = _image_path(Path(image_root), field(image, "file_name", str, image_where), image_where, skips)
    records: list[CaptionRecord] = []
    for position, annotation in enumerate(annotations):
        annotation_where = f"{json_path}: annotations[{position}]"
        image_id = field(annotation, "image_id", int, annotation_where)
        caption = field(annotation, "caption", str, annotation_where)
        if image_id not in paths:
            raise ValueError(f"{annotation_where}.image_id: no image with id {image_id} in 'images'")
        path = paths[image_id]
        if path is None:
            skips.skip("outside_image_root", f"{annotation_where}: image {image_id} is outside the image root")
            continue
        records.append(CaptionRecord(path, caption, image_id, split))
    return records


def _image_path(root: Path, file_name: str, where: str, skips: SkipLog | None) -> str | None:
    try:
        return resolve_image(root, file_name, f"{where}.file_name")
    except PathEscapeError:
        if skips is None:
            raise
        return None
