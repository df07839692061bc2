"""Annotating a class-folder image set (Corel1k style) with words through the trained towers.

Each image lives in ``<root>/<class name>/``; each class has a text: its name with ``_``
and ``-`` as spaces, or a line of a descriptions file (``class<TAB>text``). An image is
annotated with the classes whose texts' embeddings are nearest to its own.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vse_tf.data.readers.folders import ClassFolderSet, read_class_folders
from vse_tf.evaluation.metrics import mean_average_precision

__all__ = ["AnnotationReport", "ClassFolderSet", "annotation_report", "export_class_folders", "read_class_folders"]


@dataclasses.dataclass(frozen=True)
class AnnotationReport:
    """Top-k annotation accuracy, MAP both ways, and accuracy per class (percent / [0, 1])."""

    top1: float
    top5: float
    image_to_class_map: float
    class_to_image_map: float
    per_class_top1: dict[str, float]
    images: int
    classes: int


def annotation_report(
    image_embeddings: np.ndarray, labels: Sequence[str], class_names: Sequence[str], class_embeddings: np.ndarray
) -> AnnotationReport:
    """Scores annotation: each image ranks the classes by dot product with their texts."""
    labels = np.asarray(labels)
    names = np.asarray(class_names)
    scores = np.asarray(image_embeddings, np.float32) @ np.asarray(class_embeddings, np.float32).T
    order = np.argsort(-scores, axis=1, kind="stable")
    truth = np.array([np.flatnonzero(names == label)[0] for label in labels])
    rank = np.argmax(order == truth[:, None], axis=1)
    per_class = {
        str(name): float(100.0 * np.mean(rank[labels == name] == 0)) for name in names if np.any(labels == name)
    }
    return AnnotationReport(
        top1=float(100.0 * np.mean(rank < 1)),
        top5=float(100.0 * np.mean(rank < 5)),
        image_to_class_map=mean_average_precision(image_embeddings, class_embeddings, labels, names),
        class_to_image_map=mean_average_precision(class_embeddings, image_embeddings, names, labels),
        per_class_top1=per_class,
        images=len(labels),
        classes=len(names),
    )


def export_class_folders(image_refs: Sequence[str], categories: Sequence[str], out: str | os.PathLike) -> Path:
    """Hard-links (or copies) a labelled split's images into ``out/<category>/`` (a Corel-style tree).

    Not symlinks: the folders reader refuses links that resolve outside its root.
    """
    out = Path(out)
    for ref, category in zip(image_refs, categories):
        if not category:
            raise ValueError(f"{ref}: no category; class folders need one per image")
        target = out / category / Path(ref).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(ref, target)
            except OSError:  # another file system
                shutil.copyfile(ref, target)
    return out
