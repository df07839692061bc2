"""Tests of the generated shapes dataset (vse_tf.data.synthetic.shapes)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vse_tf.data.synthetic import shapes
from vse_tf.data.synthetic.shapes import ShapesConfig, generate_shapes_dataset
from vse_tf.evaluation.ceiling import retrieval_ceiling

TINY = ShapesConfig(seed=3, image_size=64, train_images=40, val_images=10, test_images=10)
SIZE_WORDS = {"small": {"small", "little", "tiny"}, "big": {"big", "large", "huge"}}
SHAPE_WORDS = {
    "circle": {"circle", "disc"},
    "square": {"square", "box"},
    "triangle": {"triangle"},
    "star": {"star"},
    "diamond": {"diamond", "rhombus"},
    "cross": {"cross", "plus"},
}
HORIZONTAL = (
    "left of",
    "right of",
    "left side of",
    "right side of",
    "to its left",
    "to its right",
    "on its left",
    "on its right",
)
VERTICAL = ("above", "over", "on top of", "below", "under", "beneath")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes_tiny")
    generate_shapes_dataset(out, TINY)
    return out


@pytest.fixture(scope="module")
def tiny_doc(tiny_dir) -> dict:
    return json.loads((tiny_dir / "dataset_shapes.json").read_text())


def parse_key(description: str) -> tuple[list[tuple[str, str, str]], str]:
    """``small red circle | left of | big blue star`` -> ([objects], link)."""
    parts = description.split(" | ")
    objects = [tuple(parts[0].split())] + ([tuple(parts[2].split())] if len(parts) == 3 else [])
    return objects, parts[1]


def many_layouts(config: ShapesConfig, count: int):
    return [(index, shapes.sample_layout(config, index)) for index in range(count)]


# ------------------------------------------------------------------------ layout on disk


def test_karpathy_layout_and_fields(tiny_dir, tiny_doc):
    assert tiny_doc["dataset"] == "shapes"
    stored = {k: v for k, v in tiny_doc["generator_config"].items() if k != "generator_version"}
    assert stored == dataclasses.asdict(TINY)
    sentids = []
    for position, image in enumerate(tiny_doc["images"]):
        assert image["imgid"] == position
        assert image["filename"] == f"shapes_{position:06d}.jpg"
        assert (tiny_dir / "images" / image["filename"]).is_file()
        assert image["category"] in shapes.SHAPES
        assert image["sentids"] == [s["sentid"] for s in image["sentences"]]
        for sentence in image["sentences"]:
            assert sentence["imgid"] == position
            assert sentence["tokens"] == sentence["raw"].lower().split()
            assert all(re.fullmatch(r"[a-z]+", token) for token in sentence["tokens"])
        sentids += image["sentids"]
    assert sorted(sentids) == list(range(len(sentids)))
    assert not [p for p in tiny_dir.iterdir() if p.name.endswith(".tmp")]


def test_readable_by_karpathy_reader(tiny_dir):
    karpathy = pytest.importorskip("vse_tf.data.readers.karpathy")
    records = karpathy.read_karpathy_json(tiny_dir / "dataset_shapes.json", tiny_dir / "images", splits=("test",))
    assert len(records) == 10 * 5
    assert all(Path(record.image_ref).is_file() for record in records)


def test_counts_per_split_and_image_files(tiny_dir, tiny_doc):
    splits = [image["split"] for image in tiny_doc["images"]]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (40, 10, 10)
    assert len(list((tiny_dir / "images").glob("*.jpg"))) == 60
    with Image.open(tiny_dir / "images" / "shapes_000000.jpg") as image:
        assert image.size == (64, 64) and image.mode == "RGB"


def test_five_distinct_captions_per_image(tiny_doc):
    for image in tiny_doc["images"]:
        raws = [s["raw"] for s in image["sentences"]]
        assert len(raws) == 5 and len(set(raws)) == 5


def test_json_matches_layouts(tiny_doc):
    for image in tiny_doc["images"]:
        layout = shapes.sample_layout(TINY, image["imgid"])
        assert image["description"] == layout.description
        assert image["category"] == layout.category


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_dir):
    config = dataclasses.replace(TINY, image_size=32, train_images=8, val_images=2, test_images=2)
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_shapes_dataset(first, config)
    generate_shapes_dataset(second, config)
    generate_shapes_dataset(other, dataclasses.replace(config, seed=config.seed + 1))
    name = "dataset_shapes.json"
    assert (first / name).read_bytes() == (second / name).read_bytes()
    for path in (first / "images").iterdir():
        assert path.read_bytes() == (second / "images" / path.name).read_bytes()
    assert (first / name).read_bytes() != (other / name).read_bytes()
    pixels = np.asarray(Image.open(first / "images" / "shapes_000000.jpg"))
    assert not np.array_equal(pixels, np.asarray(Image.open(other / "images" / "shapes_000000.jpg")))


def test_render_is_deterministic():
    assert np.array_equal(shapes.render_image(TINY, 5), shapes.render_image(TINY, 5))


# ------------------------------------------------------------------------------ captions


@pytest.mark.parametrize("size", [32, 64, 96])
def test_every_caption_carries_the_full_description(size):
    config = dataclasses.replace(TINY, image_size=size)
    seen_kinds = set()
    for index, layout in many_layouts(config, 300):
        objects, link = parse_key(layout.description)
        seen_kinds.add(len(objects))
        for caption in shapes.sample_captions(config, index, layout):
            words = caption.split()
            sizes = [w for w in words if any(w in group for group in SIZE_WORDS.values())]
            colours = [w for w in words if w in shapes.COLOURS]
            kinds = [w for w in words if any(w in group for group in SHAPE_WORDS.values())]
            assert len(sizes) == len(colours) == len(kinds) == len(objects), caption
            for obj_size, colour, shape in objects:
                assert any(w in SIZE_WORDS[obj_size] for w in sizes), caption
                assert colour in colours, caption
                assert any(w in SHAPE_WORDS[shape] for w in kinds), caption
            if len(objects) == 2:
                axis, wrong = (HORIZONTAL, VERTICAL) if link == "left of" else (VERTICAL, HORIZONTAL)
                assert any(phrase in caption for phrase in axis), caption
                assert not any(re.search(rf"\b{phrase}\b", caption) for phrase in wrong), caption
            else:
                assert any(phrase in caption for phrase in shapes._LOCATION_WORDS[link]), caption
    assert seen_kinds == {1, 2}


def test_articles_agree():
    for index, layout in many_layouts(TINY, 300):
        for caption in shapes.sample_captions(TINY, index, layout):
            assert not re.search(r"\ba [aeiou]", caption), caption
            assert not re.search(r"\ban [^aeiou]", caption), caption


def test_captions_use_varied_templates():
    captions = [c for i, layout in many_layouts(TINY, 200) for c in shapes.sample_captions(TINY, i, layout)]
    openings = {" ".join(c.split()[:2]) for c in captions}
    assert len(openings) > 20
    assert any(" an orange " in f" {c} " for c in captions)


def test_category_is_the_larger_object():
    for _, layout in many_layouts(TINY, 200):
        objects, _ = parse_key(layout.description)
        bigger = [shape for size, _, shape in objects if size == "big"]
        expected = bigger[0] if len(bigger) == 1 else objects[0][2]
        assert layout.category == expected


# ------------------------------------------------------------------------------- layouts


def _find(layout, phrase: tuple[str, str, str]):
    matches = [obj for obj in layout.objects if (obj.size, obj.colour, obj.shape) == phrase]
    assert len(matches) >= 1
    return matches[0]


@pytest.mark.parametrize("size", [32, 64, 96])
def test_relations_and_locations_match_positions(size):
    config = dataclasses.replace(TINY, image_size=size)
    for _, layout in many_layouts(config, 300):
        objects, link = parse_key(layout.description)
        for obj in layout.objects:
            left, top, right, bottom = obj.bbox()
            assert 0 <= left and 0 <= top and right <= size and bottom <= size
        if len(objects) == 2:
            first, second = _find(layout, objects[0]), _find(layout, objects[1])
            dx, dy = second.cx - first.cx, second.cy - first.cy
            if link == "left of":
                assert dx > 0 and abs(dx) >= 1.5 * abs(dy) - 1e-2
            else:
                assert link == "above" and dy > 0 and abs(dy) >= 1.5 * abs(dx) - 1e-2
            gap = max(abs(dx), abs(dy)) - first.radius - second.radius
            assert gap > 0, "bounding boxes overlap"
        else:
            obj = layout.objects[0]
            row, col = int(obj.cy // (size / 3)), int(obj.cx // (size / 3))
            assert shapes.LOCATIONS[row][col] == link
            for centre in (obj.cx, obj.cy):
                distance_to_boundary = min(abs(centre - size / 3), abs(centre - 2 * size / 3))
                assert distance_to_boundary >= 0.04 * size - 1e-2


def test_scenes_do_not_depend_on_resolution():
    small, large = (dataclasses.replace(TINY, image_size=size) for size in (32, 96))
    for index in range(100):
        layout = shapes.sample_layout(small, index)
        assert layout.description == shapes.sample_layout(large, index).description
        assert shapes.sample_captions(small, index, layout) == shapes.sample_captions(large, index, layout)


def test_objects_have_distinct_sizes():
    radii = {"small": [], "big": []}
    for _, layout in many_layouts(TINY, 200):
        for obj in layout.objects:
            radii[obj.size].append(obj.radius / TINY.image_size)
    assert max(radii["small"]) < min(radii["big"])


def _colour_distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def test_rendered_colours_sit_where_described(tiny_dir, tiny_doc):
    for image in tiny_doc["images"]:
        layout = shapes.sample_layout(TINY, image["imgid"])
        pixels = np.asarray(Image.open(tiny_dir / "images" / image["filename"]), dtype=float)
        outside = np.ones(pixels.shape[:2], dtype=bool)
        for obj in layout.objects:
            left, top, right, bottom = (int(round(v)) for v in obj.bbox())
            outside[max(top, 0) : bottom, max(left, 0) : right] = False
        background = pixels[outside].mean(axis=0)
        for obj in layout.objects:
            target = shapes.COLOURS[obj.colour]
            left, top, right, bottom = (int(round(v)) for v in obj.bbox())
            box_mean = pixels[top:bottom, left:right].reshape(-1, 3).mean(axis=0)
            assert _colour_distance(box_mean, target) < _colour_distance(background, target)
            x, y = int(obj.cx), int(obj.cy)
            centre = pixels[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(axis=0)
            nearest = min(shapes.COLOURS, key=lambda name: _colour_distance(centre, shapes.COLOURS[name]))
            assert nearest == obj.colour, (image["filename"], obj)


def test_background_is_not_flat(tiny_dir):
    pixels = np.asarray(Image.open(tiny_dir / "images" / "shapes_000001.jpg"), dtype=float)
    assert pixels[:4, :4].std() > 1.0 or pixels[-4:, -4:].std() > 1.0


# ------------------------------------------------------------------------------ ceiling


def test_ceiling_all_distinct_is_100():
    assert retrieval_ceiling(["a", "b", "c"], 5) == {"i2t_r1": 100.0, "t2i_r1": 100.0, "mean_r1": 100.0}


def test_ceiling_two_images_sharing_a_description():
    ceiling = retrieval_ceiling(["a", "a"], [5, 5])
    assert ceiling["t2i_r1"] == pytest.approx(50.0)
    assert ceiling["i2t_r1"] == pytest.approx(50.0)
    assert ceiling["mean_r1"] == pytest.approx(50.0)


def test_ceiling_uneven_captions():
    ceiling = retrieval_ceiling(["a", "a", "b"], [1, 1, 4])
    assert ceiling["t2i_r1"] == pytest.approx(100 * (0.5 + 0.5 + 4) / 6)
    assert ceiling["i2t_r1"] == pytest.approx(100 * (0.5 + 0.5 + 1) / 3)


def test_ceiling_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        retrieval_ceiling(["a", "b"], [5])


def test_default_test_split_ceiling_above_90():
    config = ShapesConfig()
    start = config.train_images + config.val_images
    descriptions = [shapes.sample_layout(config, i).description for i in range(start, config.total_images)]
    ceiling = retrieval_ceiling(descriptions, config.captions_per_image)
    assert ceiling["i2t_r1"] > 90 and ceiling["t2i_r1"] > 90


# --------------------------------------------------------------------------- CLI, reuse


def test_cli_generates_then_skips(tmp_path, capsys):
    argv = [
        "--out",
        str(tmp_path),
        "--image_size",
        "32",
        "--train_images",
        "6",
        "--val_images",
        "2",
        "--test_images",
        "2",
        "--seed",
        "7",
    ]
    assert shapes.main(argv) == 0
    first = capsys.readouterr().out
    assert "wrote" in first and "ceiling" in first
    document = json.loads((tmp_path / "dataset_shapes.json").read_text())
    assert document["generator_config"]["seed"] == 7 and len(document["images"]) == 10
    image = tmp_path / "images" / "shapes_000000.jpg"
    stamp = image.stat().st_mtime_ns
    assert shapes.main(argv) == 0
    second = capsys.readouterr().out
    assert "skipped" in second and "ceiling" in second
    assert image.stat().st_mtime_ns == stamp
    assert shapes.main(argv[:-1] + ["8"]) == 0
    assert "wrote" in capsys.readouterr().out


def test_cli_as_module(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vse_tf.data.synthetic.shapes",
            "--out",
            str(tmp_path),
            "--image_size",
            "32",
            "--train_images",
            "3",
            "--val_images",
            "1",
            "--test_images",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ceiling" in result.stdout
    assert (tmp_path / "images" / "shapes_000004.jpg").is_file()


def test_smaller_rerun_removes_stale_images(tmp_path):
    config = dataclasses.replace(TINY, image_size=32, train_images=6, val_images=2, test_images=2)
    generate_shapes_dataset(tmp_path, config)
    summary = generate_shapes_dataset(tmp_path, dataclasses.replace(config, train_images=3))
    assert not summary["skipped"]
    assert summary["counts"] == {"train": 3, "val": 2, "test": 2}
    assert len(list((tmp_path / "images").glob("shapes_*.jpg"))) == 7


def test_missing_image_forces_regeneration(tmp_path):
    config = dataclasses.replace(TINY, image_size=32, train_images=3, val_images=1, test_images=1)
    generate_shapes_dataset(tmp_path, config)
    (tmp_path / "images" / "shapes_000002.jpg").unlink()
    assert not generate_shapes_dataset(tmp_path, config)["skipped"]
    assert (tmp_path / "images" / "shapes_000002.jpg").is_file()


def test_invalid_config_rejected():
    with pytest.raises(ValueError):
        ShapesConfig(image_size=16)
    with pytest.raises(ValueError):
        ShapesConfig(single_object_fraction=1.5)
