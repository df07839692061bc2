"""Reader for class-folder image sets (Corel1k style): ``root/<class name>/<image>``.

The text of a class is its folder name with ``_`` and ``-`` as spaces, or a line
``class<TAB>text`` of a descriptions file. Class folders and image files that resolve
outside ``root`` (symbolic links) are refused. Plain Python.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from vse_tf.data.common import PathEscapeError, read_lines, resolve_image
from vse_tf.data.image_facts import IMAGE_SUFFIXES
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog


@dataclasses.dataclass(frozen=True)
class ClassFolderSet:
    """Images with their class, and a text per class."""

    image_paths: tuple[str, ...]
    labels: tuple[str, ...]
    class_texts: dict[str, str]


def read_class_folders(
    root: str | os.PathLike, descriptions: str | os.PathLike | None = None, skips: SkipLog | None = None
) -> ClassFolderSet:
    """Lists ``root/<class>/<image>`` files (by suffix) and each class's text.

    Args:
        root: the folder of class folders.
        descriptions: optional ``class<TAB>text`` lines.
        skips: when given, entries that resolve outside ``root`` (``outside_image_root``)
            and entries with an image suffix that are not regular files (a folder named
            ``x.jpg``, a FIFO: ``not_a_regular_file``) are skipped and counted; without
            it they raise.

    Raises:
        FileNotFoundError: ``root`` is not a folder or holds no images.
        PathEscapeError: an entry resolves outside ``root`` (without ``skips``).
        ValueError: a descriptions line lacks a tab (the message names file and line), or
            an image entry is not a regular file (without ``skips``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    paths, labels = [], []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        if _refused(root, folder, skips):
            continue
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES or _refused(root, image, skips):
                continue
            paths.append(str(image))
            labels.append(folder.name)
    if not paths:
        raise FileNotFoundError(f"{root}: no images in class folders")
    texts = {label: label.replace("_", " ").replace("-", " ") for label in sorted(set(labels))}
    if descriptions:
        texts.update(_read_descriptions(Path(descriptions), set(texts)))
    return ClassFolderSet(tuple(paths), tuple(labels), texts)


def _refused(root: Path, entry: Path, skips: SkipLog | None) -> bool:
    """Whether ``entry`` is left out: it resolves outside ``root``, or is an image name that
    is not a regular file (counted in ``skips``, else raised)."""
    try:
        resolve_image(root, str(entry.relative_to(root)), str(entry))
    except PathEscapeError as error:
        if skips is None:
            raise
        skips.skip("outside_image_root", str(error))
        return True
    if entry.parent == root or entry.is_file():
        return False
    problem = f"{entry}: not a regular file"
    if skips is None:
        raise ValueError(problem)
    skips.skip("not_a_regular_file", problem)
    return True


def read_folder_records(
    root: str | os.PathLike, descriptions: str | os.PathLike | None = None, skips: SkipLog | None = None
) -> list[CaptionRecord]:
    """One record per image: the class text as caption, the class as category, no split.

    Image ids number the images in sorted order; the split is ``""`` (assigned later by
    :func:`vse_tf.data.datasets.assign_splits`). ``skips``: see :func:`read_class_folders`.
    """
    data = read_class_folders(root, descriptions, skips)
    return [
        CaptionRecord(path, data.class_texts[label], image_id, "", label)
        for image_id, (path, label) in enumerate(zip(data.image_paths, data.labels))
    ]


def _read_descriptions(path: Path, classes: set[str]) -> dict[str, str]:
    texts = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{path}: line {number}: expected 'class<TAB>text'")
        name, text = line.split("\t", 1)
        if name in classes:
            texts[name] = text.strip()
    return texts
