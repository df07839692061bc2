"""Reader for Open Clip Art as Debian ships it (``openclipart-png`` + ``openclipart-svg``).

Layout: ``<root>/png/<category>/[<sub>/...]<name>.png`` with, for each, the SVG of the
same relative path under ``<root>/svg/`` (Debian: ``/usr/share/openclipart``). The
category is the top folder under ``png/`` (22 of them). The text comes from the SVG's
RDF metadata: ``dc:title`` of the work, the ``dc:subject`` keywords and ``dc:description``.
Many PNGs are symbolic links to the same drawing filed under a second category; each
drawing is read once, under the first path in sorted order.

The split is fixed by a hash of the file name (SHA-1 of ``<name>.png``), so it is the same
on every machine and a drawing filed twice lands in one split. Plain Python, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from vse_tf.data.common import hashed_split
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS, PNG_MAGIC
from vse_tf.data.records import CaptionRecord
from vse_tf.data.skips import SkipLog
from vse_tf.files import write_text_atomic

DEBIAN_ROOT = Path("/usr/share/openclipart")
TEXT_FIELDS = ("title", "keywords", "description")
# A description shorter than this many words is mostly a repeat of the title or empty.
MIN_DESCRIPTION_WORDS = 3
# Drawings larger than this are skipped (a few Open Clip Art PNGs have 170 to 620 million
# pixels: gigabytes to decode for a 224x224 input); the exported image tower refuses them too.
# Keywords that say nothing about the picture.
UNINFORMATIVE_KEYWORDS = frozenset({"unsorted", "clip art", "clipart", "image", "media", "png", "svg", "public domain"})

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


@dataclasses.dataclass(frozen=True)
class Clipart:
    """One drawing: its PNG, category, text fields and split."""

    png: str
    name: str
    category: str
    title: str
    keywords: tuple[str, ...]
    description: str
    split: str

    def text(self, field: str) -> str:
        """``title``, ``keywords`` (joined by spaces) or ``description`` (empty when too short)."""
        if field == "title":
            return self.title
        if field == "keywords":
            return " ".join(self.keywords)
        if field == "description":
            return self.description if len(self.description.split()) >= MIN_DESCRIPTION_WORDS else ""
        raise ValueError(f"unknown text field {field!r}, expected one of {TEXT_FIELDS}")


class ReadReport(SkipLog):
    """What the reader skipped and why (a :class:`SkipLog`), plus the drawings kept and the
    symbolic links read once under another category."""

    def __init__(self) -> None:
        super().__init__()
        self.drawings = 0
        self.links_skipped = 0

    def describe(self) -> str:
        parts = [f"{self.drawings} drawings", f"{self.links_skipped} links to drawings already read"]
        for reason, count in self.skipped.items():
            parts.append(f"{count} skipped: {reason} (e.g. {self.examples[reason][0]})")
        return "openclipart: " + "; ".join(parts)


def split_of(name: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """``train``/``val``/``test`` of a drawing by its file name (:func:`vse_tf.data.common.hashed_split`)."""
    return hashed_split(name, val_fraction, test_fraction)


def read_openclipart(
    root: str | os.PathLike = DEBIAN_ROOT,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[list[Clipart], ReadReport]:
    """Reads every drawing that has both a PNG and an SVG.

    Returns:
        The drawings in sorted path order, and a report of what was skipped (no SVG,
        unreadable SVG, not a PNG, more than ``max_pixels`` pixels) and why.

    Raises:
        FileNotFoundError: ``root/png`` or ``root/svg`` is missing (the message says which
            Debian packages provide them).
    """
    root = Path(root)
    png_root, svg_root = root / "png", root / "svg"
    for folder, package in ((png_root, "openclipart-png"), (svg_root, "openclipart-svg")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing; install the Debian package {package}")
    report = ReadReport()
    seen: set[Path] = set()
    drawings = []
    resolved_root = root.resolve()
    for png in sorted(png_root.rglob("*.png")):
        real = png.resolve()
        if not real.is_relative_to(resolved_root):
            report.skip("outside_image_root", f"{png}: resolves to {real}, outside {root}")
            continue
        if real in seen:
            report.links_skipped += 1
            continue
        seen.add(real)
        relative = png.relative_to(png_root)
        if len(relative.parts) < 2:
            report.skip("not inside a category folder", str(png))
            continue
        pixels = png_pixels(png)
        if pixels is None:
            report.skip("not a PNG", str(png))
            continue
        if pixels > max_pixels:
            report.skip(f"more than {max_pixels:,} pixels", str(png))
            continue
        svg = (svg_root / relative).with_suffix(".svg")
        if not svg.is_file():
            report.skip("no SVG of the same name", str(png))
            continue
        if not svg.resolve().is_relative_to(resolved_root):
            report.skip("outside_image_root", f"{svg}: resolves to {svg.resolve()}, outside {root}")
            continue
        try:
            title, keywords, description = read_svg_metadata(svg)
        except (ElementTree.ParseError, UnicodeDecodeError, OSError) as error:
            report.skip(f"unreadable SVG ({type(error).__name__})", str(svg))
            continue
        drawings.append(
            Clipart(
                png=str(png),
                name=png.name,
                category=relative.parts[0],
                title=title,
                keywords=keywords,
                description=description,
                split=split_of(png.name, val_fraction, test_fraction),
            )
        )
    report.drawings = len(drawings)
    return drawings, report


def png_pixels(path: Path) -> int | None:
    """Width x height from a PNG's header (no decoding), or None when it is not a PNG."""
    with path.open("rb") as handle:
        header = handle.read(24)
    if len(header) < 24 or not header.startswith(PNG_MAGIC):
        return None
    return int.from_bytes(header[16:20], "big") * int.from_bytes(header[20:24], "big")


def read_svg_metadata(path: str | os.PathLike) -> tuple[str, tuple[str, ...], str]:
    """``(title, keywords, description)`` from an SVG's RDF metadata; empty when absent.

    Only the ``<metadata>`` element is parsed (parsing stops at its end). The title is the
    work's ``dc:title``, not an agent's (creator, publisher).

    Raises:
        xml.etree.ElementTree.ParseError: the SVG is not well-formed XML before the
            metadata ends.
    """
    for _event, element in ElementTree.iterparse(str(path), events=("end",)):
        if element.tag.endswith("}metadata") or element.tag == "metadata":
            return _work_text(element)
    return "", (), ""


def _work_text(metadata: ElementTree.Element) -> tuple[str, tuple[str, ...], str]:
    works = [element for element in metadata.iter() if element.tag.endswith("}Work")]
    if not works:
        return "", (), ""
    work = works[0]
    title = _clean(work.findtext(f"{_DC}title"))
    description = _clean(work.findtext(f"{_DC}description"))
    keywords = []
    for subject in work.findall(f"{_DC}subject"):
        items = [item.text for item in subject.iter(f"{_RDF}li")] or [subject.text]
        for item in items:
            keyword = _clean(item)
            if keyword and keyword.lower() not in UNINFORMATIVE_KEYWORDS and keyword not in keywords:
                keywords.append(keyword)
    return title, tuple(keywords), description


def _clean(text: str | None) -> str:
    # Some titles hold HTML entities escaped twice ("d&amp;#39;Aosta"): unescape what XML left.
    return " ".join(html.unescape(text or "").split())


def openclipart_records(
    drawings: Iterable[Clipart],
    train_fields: Sequence[str] = TEXT_FIELDS,
    eval_fields: Sequence[str] = ("title",),
) -> tuple[list[CaptionRecord], Counter]:
    """One caption record per non-empty text field of each drawing.

    Training drawings get a caption per field of ``train_fields`` (title, keywords,
    description: several views of one picture); validation and test drawings only
    ``eval_fields`` (the title: Recall@K then measures title <-> image). A drawing left
    without any text is skipped and counted.

    Returns:
        The records (``image_id`` = position in ``drawings``) and skips by split.
    """
    records, skipped = [], Counter()
    for image_id, drawing in enumerate(drawings):
        fields = train_fields if drawing.split == "train" else eval_fields
        texts = [text for text in (drawing.text(field) for field in fields) if text]
        if not texts:
            skipped[f"{drawing.split}: no text"] += 1
        for text in texts:
            records.append(CaptionRecord(drawing.png, text, image_id, drawing.split, drawing.category))
    return records, skipped


def write_karpathy_json(
    records: Sequence[CaptionRecord], json_path: str | os.PathLike, image_root: str | os.PathLike, dataset: str
) -> Path:
    """Writes records in the Karpathy layout that :func:`vse_tf.data.readers.karpathy.read_karpathy_json`
    reads (image paths relative to ``image_root``, categories kept), so that training goes
    through the project's standard reader.

    Raises:
        ValueError: an image lies outside ``image_root``.
    """
    root = Path(image_root).resolve()
    by_image: dict[int, dict] = {}
    for record in records:
        if record.image_id not in by_image:
            image = Path(record.image_ref).resolve()
            if not image.is_relative_to(root):
                raise ValueError(f"{record.image_ref}: outside the image root {root}")
            by_image[record.image_id] = {
                "filepath": str(image.parent.relative_to(root)),
                "filename": image.name,
                "imgid": record.image_id,
                "split": record.split,
                "category": record.category,
                "sentences": [],
            }
        by_image[record.image_id]["sentences"].append({"raw": record.caption, "tokens": record.caption.lower().split()})
    path = Path(json_path)
    write_text_atomic(path, json.dumps({"dataset": dataset, "images": list(by_image.values())}))
    return path
