"""The Open Clip Art reader on a tiny tree in the Debian layout (png/ + svg/ per category)."""

import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vse_tf.data.readers.karpathy import read_karpathy_json
from vse_tf.data.readers.openclipart import (
    openclipart_records,
    read_openclipart,
    read_svg_metadata,
    split_of,
    write_karpathy_json,
)
from vse_tf.image.features import dataset_splits, source_data_config

SVG = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>{title}</dc:title>
        <dc:description>{description}</dc:description>
        <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
        <dc:creator><cc:Agent><dc:title>Some Artist</dc:title></cc:Agent></dc:creator>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <rect width="10" height="10"/>
</svg>
"""


def add_drawing(root, relative, title, keywords=(), description=""):
    png = root / "png" / f"{relative}.png"
    svg = root / "svg" / f"{relative}.svg"
    png.parent.mkdir(parents=True, exist_ok=True)
    svg.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((12, 12, 4), np.uint8)
    pixels[3:9, 3:9] = (200, 30, 30, 255)  # a red square on a transparent background
    Image.fromarray(pixels, "RGBA").save(png)
    items = "".join(f"<rdf:li>{keyword}</rdf:li>" for keyword in keywords)
    svg.write_text(SVG.format(title=title, description=description, keywords=items))
    return png


@pytest.fixture
def clipart_tree(tmp_path):
    root = tmp_path / "openclipart"
    add_drawing(root, "animals/cat_01", "Black cat", ("cat", "unsorted", "pet"), "a black cat sitting down")
    add_drawing(root, "animals/farm/cow_01", "Cow", ("cow",), "cow")  # one-word description: dropped
    add_drawing(root, "food/apple_01", "Red apple &amp; leaf", ("fruit",))
    add_drawing(root, "food/untitled_01", "", ())  # no text at all
    # the same drawing filed under a second category, as Debian does with symbolic links
    (root / "png" / "people").mkdir(parents=True)
    os.symlink("../animals/cat_01.png", root / "png" / "people" / "cat_01.png")
    # a PNG without its SVG, and one whose SVG is not XML
    Image.new("RGB", (4, 4)).save(root / "png" / "food" / "lonely.png")
    add_drawing(root, "food/broken_01", "x")
    (root / "svg" / "food" / "broken_01.svg").write_text("<svg><metadata><unclosed></svg>")
    return root


def test_reads_category_title_keywords_description_and_counts_skips(clipart_tree):
    drawings, report = read_openclipart(clipart_tree)
    by_name = {drawing.name: drawing for drawing in drawings}
    assert sorted(by_name) == ["apple_01.png", "cat_01.png", "cow_01.png", "untitled_01.png"]
    cat = by_name["cat_01.png"]
    assert (cat.category, cat.title, cat.keywords) == ("animals", "Black cat", ("cat", "pet"))  # not "unsorted"
    assert cat.text("description") == "a black cat sitting down"
    assert by_name["cow_01.png"].category == "animals"  # the top folder, not animals/farm
    assert by_name["cow_01.png"].text("description") == ""
    assert by_name["apple_01.png"].title == "Red apple & leaf"
    assert report.links_skipped == 1 and report.drawings == 4
    assert report.skipped == Counter({"no SVG of the same name": 1, "unreadable SVG (ParseError)": 1})
    assert "lonely.png" in report.describe() and "broken_01.svg" in report.describe()


def test_drawings_over_the_pixel_limit_are_skipped_and_counted(clipart_tree):
    drawings, report = read_openclipart(clipart_tree, max_pixels=100)  # the drawings are 12x12 = 144
    assert drawings == [] and report.skipped["more than 100 pixels"] == 5  # lonely.png is 4x4


def test_creator_title_is_not_the_work_title(tmp_path):
    svg = tmp_path / "a.svg"
    svg.write_text(SVG.format(title="", description="", keywords="<rdf:li>tree</rdf:li>"))
    assert read_svg_metadata(svg) == ("", ("tree",), "")


def test_missing_package_folders_name_the_debian_package(tmp_path):
    (tmp_path / "png").mkdir()
    with pytest.raises(FileNotFoundError, match="openclipart-svg"):
        read_openclipart(tmp_path)


def test_split_is_a_stable_hash_of_the_file_name():
    names = [f"drawing_{index:04d}.png" for index in range(2000)]
    splits = [split_of(name) for name in names]
    assert splits == [split_of(name) for name in names]
    counts = Counter(splits)
    assert 150 < counts["test"] < 250 and 150 < counts["val"] < 250  # 10% each
    assert Counter(split_of(name, val_fraction=0.0, test_fraction=0.5) for name in names)["val"] == 0


def test_records_train_on_every_field_evaluate_on_titles_and_round_trip_as_karpathy(clipart_tree, tmp_path):
    drawings, _ = read_openclipart(clipart_tree)
    drawings = [d.__class__(**{**d.__dict__, "split": "train" if d.title != "Cow" else "test"}) for d in drawings]
    records, skipped = openclipart_records(drawings)
    captions = {(record.caption, record.split) for record in records}
    assert captions == {
        ("Black cat", "train"),
        ("cat pet", "train"),
        ("a black cat sitting down", "train"),
        ("Red apple & leaf", "train"),
        ("fruit", "train"),
        ("Cow", "test"),  # test drawings keep only the title
    }
    assert skipped == Counter({"train: no text": 1})
    path = write_karpathy_json(records, tmp_path / "dataset_openclipart.json", clipart_tree, "openclipart")
    again = read_karpathy_json(path, clipart_tree)
    assert [(r.caption, r.split, r.category, r.image_id) for r in again] == [
        (r.caption, r.split, r.category, r.image_id) for r in records
    ]
    assert {os.path.realpath(r.image_ref) for r in again} == {os.path.realpath(r.image_ref) for r in records}


def test_features_source_reads_the_tree_through_the_training_reader(clipart_tree, tmp_path):
    data = source_data_config(clipart_tree, tmp_path / "work")
    assert (data.dataset, data.image_root) == ("openclipart", str(clipart_tree))
    splits = dataset_splits(data)
    records, _ = openclipart_records(read_openclipart(clipart_tree)[0])
    assert sum(split.num_captions for split in splits.values()) == len(records)
    assert {category for split in splits.values() for category in split.categories} <= {"animals", "food"}


def test_openclipart_is_a_data_format_whose_skips_are_counted(clipart_tree):
    from vse_tf.config import DataConfig
    from vse_tf.data.datasets import read_records
    from vse_tf.data.skips import SkipLog

    skips = SkipLog()
    records = read_records(DataConfig(format="openclipart", data_dir=str(clipart_tree)), skips)
    drawings, _ = read_openclipart(clipart_tree, val_fraction=0.05, test_fraction=0.05)  # DataConfig defaults
    expected, without_text = openclipart_records(drawings)
    # (a tree this small may lack a val or test drawing; read_records then carves one from train)
    assert [(r.image_ref, r.caption, r.category) for r in records] == [
        (r.image_ref, r.caption, r.category) for r in expected
    ]
    assert skips.skipped["no SVG of the same name"] == 1
    assert skips.skipped["unreadable SVG (ParseError)"] == 1
    assert any(path.endswith("lonely.png") for path in skips.examples["no SVG of the same name"])
    for reason, count in without_text.items():
        assert skips.skipped[reason] == count
