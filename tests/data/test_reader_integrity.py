"""Readers keep one file per image id and one split per image, refuse what resolves outside
the root, and the printed skip line names where the records were skipped."""

import json
import os

import pytest
from PIL import Image

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.common import PathEscapeError
from vse_tf.data.datasets import read_records
from vse_tf.data.readers.folders import read_class_folders
from vse_tf.data.readers.karpathy import read_karpathy_json
from vse_tf.data.readers.wikipedia import index_images
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_split


def image(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def karpathy(tmp_path, entries):
    image_root = tmp_path / "images"
    for entry in entries:
        image(image_root / entry["filename"])
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps({"images": entries}))
    return path, image_root


def entry(name, imgid, split, *captions):
    return {"filename": name, "imgid": imgid, "split": split, "sentences": [{"raw": c} for c in captions]}


def test_a_repeated_karpathy_id_is_refused_or_counted_with_its_captions(tmp_path):
    path, root = karpathy(
        tmp_path,
        [entry("a.jpg", 0, "train", "a one", "a two"), entry("b.jpg", 0, "test", "b one", "b two", "b three")],
    )
    with pytest.raises(ValueError, match=r"dataset_x.json: images\[1\]: duplicate image id 0 \(images\[0\] has it\)"):
        read_karpathy_json(path, root)
    skips = SkipLog()
    records = read_karpathy_json(path, root, skips=skips)
    # the reference: b.jpg's captions are not attached to a.jpg, and b.jpg is counted, not lost
    assert [(r.image_ref.rsplit("/", 1)[1], r.caption) for r in records] == [("a.jpg", "a one"), ("a.jpg", "a two")]
    assert dict(skips.skipped) == {"duplicate_image_id": 3}


def test_one_image_in_two_split_files_is_refused_or_counted(tmp_path):
    image(tmp_path / "images" / "x.jpg")
    for split, name in (("train", "x.jpg"), ("test", "x.jpg")):
        (tmp_path / f"{split}.csv").write_text(f"image,caption\n{name},{split} caption\n")
    data = DataConfig(data_dir=str(tmp_path), format="csv", annotations="{split}.csv")
    with pytest.raises(ValueError, match=r"x.jpg \(image id 1\) is in split 'train' and 'test'"):
        read_records(data)
    skips = SkipLog()
    records = read_records(data, skips)
    assert [(r.split, r.caption) for r in records] == [("train", "train caption")]
    assert dict(skips.skipped) == {"image_in_two_splits": 1}


def test_one_coco_id_in_two_split_files_is_refused(tmp_path):
    for split, name in (("train", "a.jpg"), ("val", "b.jpg")):
        image(tmp_path / "images" / name)
        document = {
            "images": [{"id": 7, "file_name": name}],
            "annotations": [{"image_id": 7, "caption": f"{split} caption"}],
        }
        (tmp_path / f"captions_{split}.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"image id 7 names .*a.jpg and .*b.jpg"):
        read_records(DataConfig(data_dir=str(tmp_path), format="coco"))


def test_symlinks_out_of_the_root_are_refused_by_every_listing_reader(tmp_path):
    outside = tmp_path / "outside"
    image(outside / "secret.jpg")
    image(outside / "class_c" / "c.jpg")
    root = tmp_path / "root"
    image(root / "class_a" / "a.jpg")
    os.symlink(outside / "secret.jpg", root / "class_a" / "linked.jpg")
    os.symlink(outside / "class_c", root / "class_c")
    with pytest.raises(PathEscapeError, match="escapes the image root"):
        read_class_folders(root)
    skips = SkipLog()
    folders = read_class_folders(root, skips=skips)
    assert [os.path.basename(path) for path in folders.image_paths] == ["a.jpg"]
    assert dict(skips.skipped) == {"outside_image_root": 2}
    with pytest.raises(PathEscapeError):
        index_images(root)
    skips = SkipLog()
    assert set(index_images(root, skips)) == {"a"}
    assert skips.skipped["outside_image_root"] >= 1
    # a table or Karpathy file naming the link: refused as the ../ path is
    (root / "captions.jsonl").write_text(json.dumps({"image": "class_a/linked.jpg", "caption": "x"}) + "\n")
    with pytest.raises(PathEscapeError):
        read_records(DataConfig(data_dir=str(root), image_root=str(root), format="jsonl"))


def test_a_folder_named_like_an_image_is_counted_as_not_a_regular_file(tmp_path):
    image(tmp_path / "class_a" / "a.jpg")
    (tmp_path / "class_a" / "dir.jpg").mkdir()
    skips = SkipLog()
    assert len(read_class_folders(tmp_path, skips=skips).image_paths) == 1
    assert dict(skips.skipped) == {"not_a_regular_file": 1}


def test_the_printed_line_names_where_records_were_skipped(tmp_path, capsys):
    entries = [entry(f"{index}.jpg", index, "train", f"caption {index}") for index in range(3)]
    entries += [entry("t.jpg", 9, "test", "test caption")]
    path, root = karpathy(tmp_path, entries)
    document = json.loads(path.read_text())
    for item in document["images"][:3]:  # three training images outside the image root
        item["filepath"] = "../.."
    path.write_text(json.dumps(document))
    config = ExperimentConfig(data=DataConfig(data_dir=str(tmp_path), dataset="x"), image=ImageTowerConfig())
    assert load_split(config, "test").num_images == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{path}: reading (all splits): skipped 3 records (outside_image_root 3)"]
