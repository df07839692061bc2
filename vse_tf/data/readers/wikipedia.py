"""Reader for the Wikipedia cross-modal set layout (Rasiwasia et al. 2010); TVGraz has the same form.

Layout::

    data_dir/trainset_txt_img_cat.list   lines "text_id<TAB or spaces>image_id<...>category"
    data_dir/testset_txt_img_cat.list
    data_dir/texts/<text_id>.xml         one document per text id (or <text_id>.txt)
    image_root/**/<image_id>.jpg         images found by file stem, in any sub-folder

From a ``.xml`` document the ``<text>...</text>`` element is taken when present (the
Wikipedia files are not always well-formed XML, so no XML parser is used), else the
whole file. Plain Python.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vse_tf.data.common import TEXT_ERRORS, PathEscapeError, read_lines, resolve_image
from vse_tf.data.image_facts import IMAGE_SUFFIXES
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog

TEXT_SUFFIXES = (".xml", ".txt")
_TEXT_ELEMENT = re.compile(r"<text>(.*?)</text>", re.DOTALL | re.IGNORECASE)
_TAGS = re.compile(r"<[^>]+>")


def index_images(image_root: str | os.PathLike, skips: SkipLog | None = None) -> dict[str, str]:
    """Maps each image file's stem to its path, over ``image_root`` and its sub-folders.

    Files and folders that resolve outside ``image_root`` (symbolic links) are left out,
    counted in ``skips`` as ``outside_image_root``; without ``skips`` they raise.

    Raises:
        FileNotFoundError: ``image_root`` is not a folder.
        PathEscapeError: an image resolves outside the root (without ``skips``).
        ValueError: two image files share a stem (names both).
    """
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    index: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                resolve_image(root, str(path.relative_to(root)), str(path))
            except PathEscapeError as error:
                if skips is None:
                    raise
                skips.skip("outside_image_root", str(error))
                continue
            if path.stem in index:
                raise ValueError(f"{path}: image id {path.stem!r} also names {index[path.stem]}")
            index[path.stem] = str(path)
    return index


def read_pair_list(
    list_path: str | os.PathLike,
    texts_dir: str | os.PathLike,
    images: dict[str, str],
    split: str,
    skips: SkipLog | None = None,
) -> list[CaptionRecord]:
    """One record per line of a ``text_id image_id category`` list.

    Args:
        list_path: the list file.
        texts_dir: folder of ``<text_id>.xml`` / ``<text_id>.txt`` documents.
        images: image id -> path (:func:`index_images`).
        split: split of these records.
        skips: when given, lines whose image or text file is missing are skipped and
            counted (``missing_file``); without it they raise.

    Raises:
        ValueError: a line without three fields (names file and line), or a missing
            image/text without ``skips``.
    """
    list_path = Path(list_path)
    records: list[CaptionRecord] = []
    numbers = {stem: number for number, stem in enumerate(images)}  # ids unique across lists
    for number, line in enumerate(read_lines(list_path), start=1):
        if not line.strip():
            continue
        where = f"{list_path}: line {number}"
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{where}: expected 'text_id image_id category', got {line!r}")
        text_id, image_id, category = parts
        image_path = images.get(image_id)
        text_path = _text_file(Path(texts_dir), text_id)
        problem = _missing(image_path, image_id, text_path, text_id, texts_dir, where)
        if problem:
            if skips is None:
                raise ValueError(problem)
            skips.skip("missing_file", problem)
            continue
        records.append(CaptionRecord(image_path, read_document(text_path), numbers[image_id], split, category))
    return records


def _missing(
    image_path: str | None, image_id: str, text_path: Path | None, text_id: str, texts_dir: os.PathLike, where: str
) -> str:
    if image_path is None:
        return f"{where}: no image file for image id {image_id!r}"
    if text_path is None:
        return f"{where}: no text document {text_id}.xml/.txt in {texts_dir}"
    return ""


def _text_file(texts_dir: Path, text_id: str) -> Path | None:
    for suffix in TEXT_SUFFIXES:
        path = texts_dir / f"{text_id}{suffix}"
        if path.is_file():
            return path
    return None


def read_document(path: Path) -> str:
    """A text document's words: the ``<text>`` element of an XML file, tags removed."""
    raw = path.read_bytes().decode("utf-8", errors=TEXT_ERRORS)
    match = _TEXT_ELEMENT.search(raw)
    body = match.group(1) if match else raw
    return " ".join(_TAGS.sub(" ", body).split())
