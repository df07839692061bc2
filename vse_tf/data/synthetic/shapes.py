"""A generated captioned-image dataset ("shapes") in the Karpathy-split layout.

Each image holds one or two coloured shapes on a textured, noisy background; each
caption states the full content (size, colour and shape of every object, plus their
spatial relation or the single object's location), so text determines the scene.
Everything derives from ``(seed, image index)``, so one seed gives byte-identical
files (given the same numpy and Pillow builds), whatever the number of processes.

Layout written::

    out_dir/dataset_<name>.json   {"dataset", "generator_config", "images": [...]}
    out_dir/images/<name>_000123.jpg

Usage::

    python -m vse_tf.data.synthetic.shapes --out data/shapes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vse_tf.evaluation.ceiling import retrieval_ceiling
from vse_tf.files import write_text_atomic

GENERATOR_VERSION = 1

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 225, 20),
    "green": (30, 175, 45),
    "blue": (30, 75, 235),
    "purple": (145, 40, 205),
    "pink": (255, 115, 195),
    "white": (248, 248, 248),
}
SIZES = ("small", "big")
# Radius (half the extent of the shape's bounding box) as a fraction of the image side.
SIZE_RADIUS = {"small": (0.09, 0.12), "big": (0.17, 0.21)}
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# 3x3 grid of single-object locations, row-major (row 0 is the top).
LOCATIONS = (
    ("top left", "top", "top right"),
    ("left", "middle", "right"),
    ("bottom left", "bottom", "bottom right"),
)

_SIZE_WORDS = {"small": ("small", "little", "tiny"), "big": ("big", "large", "huge")}
_SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
_RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left side of"),
    "right of": ("right of", "to the right of", "on the right side of"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath"),
}
# "<Y> with <X> ...": X relative to Y, said with a pronoun.
_RELATION_ITS = {
    "left of": ("to its left", "on its left"),
    "right of": ("to its right", "on its right"),
    "above": ("above it", "over it"),
    "below": ("below it", "under it"),
}
_LOCATION_WORDS = {
    "top left": ("in the top left corner", "in the upper left corner", "at the top left"),
    "top": ("at the top", "at the top center", "near the top edge"),
    "top right": ("in the top right corner", "in the upper right corner", "at the top right"),
    "left": ("on the left", "at the left side", "near the left edge"),
    "middle": ("in the middle", "in the center", "in the centre of the picture"),
    "right": ("on the right", "at the right side", "near the right edge"),
    "bottom left": ("in the bottom left corner", "in the lower left corner", "at the bottom left"),
    "bottom": ("at the bottom", "at the bottom center", "near the bottom edge"),
    "bottom right": ("in the bottom right corner", "in the lower right corner", "at the bottom right"),
}
# Caption templates. {x}/{y}: object phrases with an indefinite article, {tx}/{ty}: with
# "the", {rel}: relation phrase, {its}: pronoun relation phrase (x relative to y),
# {loc}: location phrase, {bare}: object phrase without article.
_PAIR_TEMPLATES = (
    "{x} {rel} {y}",
    "there is {x} {rel} {y}",
    "{tx} is {rel} {ty}",
    "{y} with {x} {its}",
    "{rel} {ty} there is {x}",
    "a picture of {x} {rel} {y}",
    "{x} placed {rel} {y}",
)
_SINGLE_TEMPLATES = (
    "{x} {loc}",
    "there is {x} {loc}",
    "{loc} there is {x}",
    "{tx} is {loc}",
    "a picture of {x} {loc}",
    "a single {bare} {loc}",
    "{x} sitting {loc}",
)
_MAX_PLACEMENT_TRIES = 10_000
# Placement, in units of the image side: distance kept from the image border, free space
# between two objects' boxes, distance of a single object's centre from the 3x3 grid
# lines; and how much the relation's axis must dominate the other axis.
_EDGE_MARGIN = 0.015
_OBJECT_GAP = 0.03
_CELL_MARGIN = 0.04
_DOMINANCE = 1.5


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """What to generate.

    Attributes:
        seed: every image derives from ``(seed, index)``.
        image_size: side of the square images in pixels (64 or 96 intended, >= 32).
        train_images: images in the ``train`` split (ids ``0 ..``).
        val_images: images in the ``val`` split (after train).
        test_images: images in the ``test`` split (after val).
        captions_per_image: distinct captions per image.
        single_object_fraction: share of scenes with one object and a location phrase.
        name: dataset name: ``dataset_<name>.json`` and ``<name>_000123.jpg``.
        jpeg_quality: Pillow JPEG quality of the written images.
    """

    seed: int = 0
    image_size: int = 64
    train_images: int = 6000
    val_images: int = 1000
    test_images: int = 1000
    captions_per_image: int = 5
    single_object_fraction: float = 0.15
    name: str = "shapes"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        for field in ("train_images", "val_images", "test_images"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not 0.0 <= self.single_object_fraction <= 1.0:
            raise ValueError(f"single_object_fraction must be in [0, 1], got {self.single_object_fraction}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.name):
            raise ValueError(f"name must be letters, digits, '_' or '-', got {self.name!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def total_images(self) -> int:
        return self.train_images + self.val_images + self.test_images

    def split_of(self, index: int) -> str:
        """The split of image ``index`` (train, then val, then test)."""
        if index < self.train_images:
            return "train"
        if index < self.train_images + self.val_images:
            return "val"
        return "test"


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One drawn object; coordinates are pixels, origin at the top-left corner.

    Attributes:
        shape: one of ``SHAPES``.
        colour: one of ``COLOURS``.
        size: ``small`` or ``big``.
        cx: centre x (of the bounding box).
        cy: centre y.
        radius: half the side of the object's square bounding box.
        rotation: small rotation of the outline in degrees.
        rgb: the fill colour actually used (the palette colour with jitter).
    """

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float
    rotation: float
    rgb: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        """Canonical phrase, e.g. ``small red circle``."""
        return f"{self.size} {self.colour} {self.shape}"

    def bbox(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` in pixels."""
        return (self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius)


@dataclasses.dataclass(frozen=True)
class SceneLayout:
    """What an image shows.

    Attributes:
        objects: one or two objects, in sampling order.
        relation: two objects: where ``objects[0]`` is relative to ``objects[1]``.
        location: one object: its 3x3-grid cell name (e.g. ``top left``).
    """

    objects: tuple[ShapeObject, ...]
    relation: str | None = None
    location: str | None = None

    def canonical(self) -> tuple[ShapeObject, str, ShapeObject | None]:
        """``(first, relation or location, second)``, relations folded to left of / above."""
        if self.location is not None:
            return self.objects[0], self.location, None
        first, second = self.objects
        if self.relation in ("right of", "below"):
            return second, INVERSE_RELATION[self.relation], first
        return first, self.relation, second

    @property
    def description(self) -> str:
        """Key naming the content exactly, e.g. ``small red circle | left of | big blue star``."""
        first, link, second = self.canonical()
        if second is None:
            return f"{first.phrase} | {link}"
        return f"{first.phrase} | {link} | {second.phrase}"

    @property
    def category(self) -> str:
        """Shape of the larger object (ties: the first object of the canonical key)."""
        first, _, second = self.canonical()
        if second is not None and second.size == "big" and first.size == "small":
            return second.shape
        return first.shape


# ---------------------------------------------------------------------------- layout


def image_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent generator for one purpose (0 layout, 1 captions, 2 pixels) of one image."""
    return np.random.default_rng([seed, index, stream])


def sample_layout(config: ShapesConfig, index: int) -> SceneLayout:
    """The scene of image ``index``: objects, positions and the relation or location."""
    rng = image_rng(config.seed, index, 0)
    size = config.image_size
    if rng.random() < config.single_object_fraction:
        return _place_single(rng, _sample_object_kind(rng), size)
    first = _sample_object_kind(rng)
    second = _sample_object_kind(rng)
    while second[:3] == first[:3]:
        second = _sample_object_kind(rng)
    return _place_pair(rng, first, second, size)


def _sample_object_kind(rng: np.random.Generator) -> tuple[str, str, str, float, tuple[int, int, int]]:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    size = SIZES[rng.integers(len(SIZES))]
    rotation = float(rng.uniform(-8.0, 8.0))
    jitter = rng.normal(0.0, 8.0, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255).round())
    return shape, colour, size, rotation, rgb


def _radius(rng: np.random.Generator, size_name: str) -> float:
    """Radius in units of the image side."""
    low, high = SIZE_RADIUS[size_name]
    return float(rng.uniform(low, high))


def _make_object(kind: tuple, cx: float, cy: float, radius: float, image_size: int) -> ShapeObject:
    """An object from unit coordinates, scaled to pixels."""
    shape, colour, size, rotation, rgb = kind
    cx, cy, radius = (round(v * image_size, 3) for v in (cx, cy, radius))
    return ShapeObject(shape, colour, size, cx, cy, radius, round(rotation, 3), rgb)


def _place_pair(rng: np.random.Generator, first: tuple, second: tuple, image_size: int) -> SceneLayout:
    """Positions two objects so they do not overlap and one relation clearly holds.

    Sampling happens in units of the image side, so a seed gives the same scenes at
    every resolution.
    """
    r1, r2 = _radius(rng, first[2]), _radius(rng, second[2])
    for _ in range(_MAX_PLACEMENT_TRIES):
        x1, y1 = rng.uniform(r1 + _EDGE_MARGIN, 1.0 - r1 - _EDGE_MARGIN, size=2)
        x2, y2 = rng.uniform(r2 + _EDGE_MARGIN, 1.0 - r2 - _EDGE_MARGIN, size=2)
        dx, dy = x2 - x1, y2 - y1
        major, minor = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
        # Disjoint bounding boxes along the major axis, and that axis clearly dominant.
        if major < r1 + r2 + _OBJECT_GAP or major < _DOMINANCE * minor:
            continue
        if abs(dx) > abs(dy):
            relation = "left of" if dx > 0 else "right of"
        else:
            relation = "above" if dy > 0 else "below"
        objects = (_make_object(first, x1, y1, r1, image_size), _make_object(second, x2, y2, r2, image_size))
        return SceneLayout(objects=objects, relation=relation)
    raise RuntimeError("could not place two objects")


def _cell_range(cell: int, radius: float) -> tuple[float, float]:
    """Unit centre coordinates inside grid cell ``cell`` (0..2), away from its inner boundaries."""
    third = 1.0 / 3.0
    low = radius + _EDGE_MARGIN if cell == 0 else cell * third + _CELL_MARGIN
    high = 1.0 - radius - _EDGE_MARGIN if cell == 2 else (cell + 1) * third - _CELL_MARGIN
    return low, high


def _place_single(rng: np.random.Generator, kind: tuple, image_size: int) -> SceneLayout:
    """Positions one object inside a uniformly chosen cell of the 3x3 grid."""
    radius = _radius(rng, kind[2])
    row, col = (int(v) for v in rng.integers(3, size=2))
    (x_low, x_high), (y_low, y_high) = _cell_range(col, radius), _cell_range(row, radius)
    cx, cy = rng.uniform(x_low, x_high), rng.uniform(y_low, y_high)
    obj = _make_object(kind, cx, cy, radius, image_size)
    return SceneLayout(objects=(obj,), location=LOCATIONS[row][col])


# --------------------------------------------------------------------------- captions


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _with_article(phrase: str, definite: bool) -> str:
    return f"the {phrase}" if definite else f"{_article(phrase)} {phrase}"


def _object_phrase(rng: np.random.Generator, obj: ShapeObject, last: bool) -> str:
    """An article-less phrase naming size, colour and shape in one of several word orders.

    ``last``: the phrase ends the caption, so a trailing "that is <size>" reads well.
    """
    size = _pick(rng, _SIZE_WORDS[obj.size])
    shape = _pick(rng, _SHAPE_WORDS[obj.shape])
    style = rng.random()
    if style < 0.6:
        return f"{size} {obj.colour} {shape}"
    if style < 0.8 or not last:
        return f"{size} {shape} in {obj.colour}"
    return f"{obj.colour} {shape} that is {size}"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _fill_template(rng: np.random.Generator, template: str, layout: SceneLayout) -> str:
    """One caption from one template, with random synonyms and subject order."""
    if layout.location is not None:
        subject, other, relation = layout.objects[0], None, None
    elif rng.random() < 0.5:
        subject, other, relation = layout.objects[0], layout.objects[1], layout.relation
    else:
        subject, other, relation = layout.objects[1], layout.objects[0], INVERSE_RELATION[layout.relation]
    x = _object_phrase(rng, subject, last=template.endswith("x}"))
    fields = {"x": _with_article(x, False), "tx": _with_article(x, True), "bare": x}
    if other is None:
        fields["loc"] = _pick(rng, _LOCATION_WORDS[layout.location])
    else:
        y = _object_phrase(rng, other, last=template.endswith("y}"))
        fields.update(
            y=_with_article(y, False),
            ty=_with_article(y, True),
            rel=_pick(rng, _RELATION_WORDS[relation]),
            its=_pick(rng, _RELATION_ITS[relation]),
        )
    return template.format(**fields)


def sample_captions(config: ShapesConfig, index: int, layout: SceneLayout) -> list[str]:
    """``config.captions_per_image`` distinct captions of image ``index``.

    Templates are drawn without replacement while they last; every caption names size,
    colour and shape of every object, and the relation or location.
    """
    rng = image_rng(config.seed, index, 1)
    templates = _SINGLE_TEMPLATES if layout.location is not None else _PAIR_TEMPLATES
    captions: list[str] = []
    order: list[int] = []
    for _ in range(config.captions_per_image * 50):
        if len(captions) == config.captions_per_image:
            break
        if not order:
            order = [int(i) for i in rng.permutation(len(templates))]
        caption = _fill_template(rng, templates[order.pop()], layout)
        if caption not in captions:
            captions.append(caption)
    if len(captions) < config.captions_per_image:
        raise RuntimeError(f"image {index}: could not write {config.captions_per_image} distinct captions")
    return captions


def tokenize(sentence: str) -> list[str]:
    """Lower-case words without punctuation (Karpathy ``tokens``)."""
    return re.findall(r"[^\W_]+", sentence.lower())


# -------------------------------------------------------------------------- rendering

_SUPERSAMPLE = 4


def _outline(obj: ShapeObject) -> list[tuple[float, float]] | None:
    """Polygon of the shape around the origin in units of the radius (None: a circle)."""
    if obj.shape == "circle":
        return None
    if obj.shape == "square":
        points = [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    elif obj.shape == "diamond":
        points = [(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)]
    elif obj.shape == "triangle":
        points = [(math.cos(a), math.sin(a) + 0.25) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif obj.shape == "star":
        points = []
        for k in range(10):
            angle = -math.pi / 2 + k * math.pi / 5
            reach = 1.0 if k % 2 == 0 else 0.45
            points.append((reach * math.cos(angle), reach * math.sin(angle) + 0.095))
    elif obj.shape == "cross":
        a, w = 0.95, 0.32
        points = [
            (-w, -a),
            (w, -a),
            (w, -w),
            (a, -w),
            (a, w),
            (w, w),
            (w, a),
            (-w, a),
            (-w, w),
            (-a, w),
            (-a, -w),
            (-w, -w),
        ]
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    angle = math.radians(obj.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    rotated = [(x * cos - y * sin, x * sin + y * cos) for x, y in points]
    extent = max(max(abs(x), abs(y)) for x, y in rotated)
    scale = min(1.0, 1.0 / extent)  # rotation must not push the outline out of its box
    return [(x * scale, y * scale) for x, y in rotated]


def _object_alpha(obj: ShapeObject, image_size: int) -> np.ndarray:
    """Anti-aliased coverage ``[S, S]`` in [0, 1], drawn at 4x and box-downsampled."""
    big = image_size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = obj.cx * _SUPERSAMPLE, obj.cy * _SUPERSAMPLE, obj.radius * _SUPERSAMPLE
    outline = _outline(obj)
    if outline is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon([(cx + x * r, cy + y * r) for x, y in outline], fill=255)
    small = mask.reduce(_SUPERSAMPLE)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Low-saturation mid-brightness gradient plus stripes and/or blotches, ``[S, S, 3]`` float."""
    s = image_size
    grey = rng.uniform(85, 165, size=2)
    ends = (grey[:, None] + rng.normal(0.0, 10.0, size=(2, 3))).astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1)
    along = (xs - 0.5) * math.cos(theta) + (ys - 0.5) * math.sin(theta)
    t = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    image = ends[0] + t[..., None] * (ends[1] - ends[0])
    texture = int(rng.integers(3))  # 0 stripes, 1 blotches, 2 both
    tint = (1.0 + rng.normal(0.0, 0.15, size=3)).astype(np.float32)
    if texture in (0, 2):
        phi = rng.uniform(0, 2 * math.pi)
        freq = rng.uniform(3.0, 9.0)
        direction = rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * freq * (xs * math.cos(direction) + ys * math.sin(direction)) + phi)
        image = image + np.float32(rng.uniform(5.0, 14.0)) * wave[..., None] * tint
    if texture in (1, 2):
        cells = int(rng.integers(3, 8))
        coarse = rng.normal(0.0, 1.0, size=(cells, cells)).astype(np.float32)
        blotches = np.asarray(Image.fromarray(coarse).resize((s, s), Image.Resampling.BICUBIC))
        image = image + np.float32(rng.uniform(8.0, 18.0)) * blotches[..., None] * tint
    return image


def render_layout(layout: SceneLayout, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws a scene: background, anti-aliased objects, per-pixel noise. Returns ``uint8 [S, S, 3]``."""
    image = _background(rng, image_size)
    for obj in layout.objects:
        alpha = _object_alpha(obj, image_size)[..., None]
        image = image * (1.0 - alpha) + np.asarray(obj.rgb, dtype=np.float32) * alpha
    sigma = np.float32(rng.uniform(3.0, 7.0))
    image = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def render_image(config: ShapesConfig, index: int, layout: SceneLayout | None = None) -> np.ndarray:
    """Pixels of image ``index`` (``uint8 [S, S, 3]``) before JPEG compression."""
    layout = layout if layout is not None else sample_layout(config, index)
    return render_layout(layout, config.image_size, image_rng(config.seed, index, 2))


# ---------------------------------------------------------------------------- dataset


def image_filename(config: ShapesConfig, index: int) -> str:
    return f"{config.name}_{index:06d}.jpg"


def _image_entry(config: ShapesConfig, index: int, layout: SceneLayout, captions: list[str]) -> dict:
    n = config.captions_per_image
    sentids = [index * n + k for k in range(n)]
    return {
        "filename": image_filename(config, index),
        "imgid": index,
        "split": config.split_of(index),
        "sentids": sentids,
        "sentences": [
            {"raw": raw, "tokens": tokenize(raw), "imgid": index, "sentid": sentid}
            for raw, sentid in zip(captions, sentids)
        ],
        "category": layout.category,
        "description": layout.description,
    }


def _make_image(config: ShapesConfig, index: int, image_dir: Path) -> dict:
    """Renders and writes image ``index``; returns its JSON entry."""
    layout = sample_layout(config, index)
    captions = sample_captions(config, index, layout)
    pixels = render_image(config, index, layout)
    Image.fromarray(pixels).save(image_dir / image_filename(config, index), format="JPEG", quality=config.jpeg_quality)
    return _image_entry(config, index, layout, captions)


def _config_dict(config: ShapesConfig) -> dict:
    return {**dataclasses.asdict(config), "generator_version": GENERATOR_VERSION}


def _existing_matches(json_path: Path, image_dir: Path, config: ShapesConfig) -> dict | None:
    """The stored document if it was generated with the same config and its images exist."""
    if not json_path.is_file():
        return None
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("generator_config") != _config_dict(config):
        return None
    images = document.get("images", [])
    if len(images) != config.total_images or not all((image_dir / image["filename"]).is_file() for image in images):
        return None
    return document


def _write_json_atomically(path: Path, document: dict) -> None:
    write_text_atomic(path, json.dumps(document, separators=(",", ":")))


def _remove_stale_images(image_dir: Path, config: ShapesConfig) -> None:
    """Deletes ``<name>_NNNNNN.jpg`` files left by an earlier, larger run."""
    pattern = re.compile(rf"{re.escape(config.name)}_(\d{{6,}})\.jpg")
    for path in image_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) >= config.total_images:
            path.unlink()


def _summary(document: dict, json_path: Path, seconds: float, skipped: bool) -> dict:
    images = document["images"]
    counts = Counter(image["split"] for image in images)
    test = [image for image in images if image["split"] == "test"]
    ceiling = (
        retrieval_ceiling([image["description"] for image in test], [len(image["sentences"]) for image in test])
        if test
        else None
    )
    return {
        "json_path": str(json_path),
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "counts": {split: counts.get(split, 0) for split in ("train", "val", "test")},
        "captions": sum(len(image["sentences"]) for image in images),
        "distinct_descriptions": len({image["description"] for image in images}),
        "test_ceiling": ceiling,
    }


def generate_shapes_dataset(out_dir: str | os.PathLike, config: ShapesConfig = ShapesConfig()) -> dict:
    """Writes ``out_dir/dataset_<name>.json`` and ``out_dir/images/*.jpg``.

    Skips the work when the JSON already holds the same generator config and all its
    images exist. The JSON is written last and atomically.

    Args:
        out_dir: destination folder (created if missing).
        config: what to generate.

    Returns:
        Summary: ``json_path``, ``skipped``, ``seconds``, ``counts`` per split, number of
        ``captions`` and ``distinct_descriptions``, and ``test_ceiling`` (see
        ``retrieval_ceiling``; None without test images).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    json_path = out / f"dataset_{config.name}.json"
    image_dir = out / "images"
    existing = _existing_matches(json_path, image_dir, config)
    if existing is not None:
        return _summary(existing, json_path, time.perf_counter() - start, skipped=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    entries = [_make_image(config, index, image_dir) for index in range(config.total_images)]
    _remove_stale_images(image_dir, config)
    document = {"dataset": config.name, "generator_config": _config_dict(config), "images": entries}
    _write_json_atomically(json_path, document)
    return _summary(document, json_path, time.perf_counter() - start, skipped=False)


# -------------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> tuple[Path, ShapesConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m vse_tf.data.synthetic.shapes",
        description="Generate the captioned-shapes dataset (Karpathy layout).",
    )
    parser.add_argument("--out", required=True, type=Path, help="destination folder")
    for field in dataclasses.fields(ShapesConfig):
        parser.add_argument(
            "--" + field.name,
            type=type(field.default),
            default=field.default,
            help=f"(default: {field.default})",
        )
    args = parser.parse_args(argv)
    config = ShapesConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ShapesConfig)})
    return args.out, config


def main(argv: list[str] | None = None) -> int:
    """Console entry point: generates (or reuses) the dataset and prints a summary."""
    try:
        out, config = _parse_args(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = generate_shapes_dataset(out, config)
    ceiling = summary["test_ceiling"]
    if summary["skipped"]:
        print(f"{summary['json_path']} already holds this config; skipped generation")
    else:
        print(f"wrote {summary['json_path']} in {summary['seconds']:.1f} s")
    counts = summary["counts"]
    print(
        f"images: train {counts['train']}, val {counts['val']}, test {counts['test']}; "
        f"captions {summary['captions']}; distinct descriptions {summary['distinct_descriptions']}"
    )
    if ceiling is None:
        print("test R@1 ceiling: no test images")
    else:
        print(
            f"test R@1 ceiling: i2t {ceiling['i2t_r1']:.2f}%, t2i {ceiling['t2i_r1']:.2f}%, "
            f"mean {ceiling['mean_r1']:.2f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
