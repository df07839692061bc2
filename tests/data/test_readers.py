"""Each dataset reader on a small tree the test writes, and malformed files named with the field/line."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import tiny_config, write_tiny_karpathy
from PIL import Image

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.common import PathEscapeError
from vse_tf.data.datasets import assign_splits, read_records
from vse_tf.data.pipeline import split_features
from vse_tf.data.readers.coco import read_coco_captions
from vse_tf.data.readers.precomp import read_precomp
from vse_tf.data.readers.tabular import read_csv, read_jsonl
from vse_tf.data.readers.wikipedia import index_images, read_pair_list
from vse_tf.data.records import CaptionRecord, group_by_image
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_split


def image(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def by_split(records):
    return {split: sorted({r.image_ref for r in records if r.split == split}) for split in ("train", "val", "test")}


# --- Karpathy -------------------------------------------------------------------------


def test_karpathy_restval_joins_training_only_when_asked(tmp_path):
    write_tiny_karpathy(tmp_path, {"train": 4, "restval": 3, "val": 2, "test": 2})
    config = tiny_config(tmp_path, tmp_path / "run")
    assert load_split(config, "train").num_images == 4
    with_restval = dataclasses.replace(config, data=dataclasses.replace(config.data, include_restval=True))
    assert load_split(with_restval, "train").num_images == 7
    assert load_split(with_restval, "val").num_images == 2


# --- COCO -----------------------------------------------------------------------------


def write_coco(path, images, annotations):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


def test_coco_one_file_per_split_and_split_folders(tmp_path):
    for split, ids in (("train", (1, 2)), ("val", (3,))):
        write_coco(
            tmp_path / "annotations" / f"captions_{split}2014.json",
            [{"id": i, "file_name": f"COCO_{split}2014_{i:012d}.jpg"} for i in ids],
            [{"id": 10 * i + k, "image_id": i, "caption": f"caption {k} of {i}"} for i in ids for k in range(2)],
        )
        for i in ids:
            image(tmp_path / f"{split}2014" / f"COCO_{split}2014_{i:012d}.jpg")
    data = DataConfig(
        data_dir=str(tmp_path),
        format="coco",
        annotations="annotations/captions_{split}2014.json",
        image_root=str(tmp_path / "{split}2014"),
        test_fraction=0.5,
    )
    records = read_records(data)
    assert {r.image_id for r in records if r.split == "val"} == {3}
    assert {r.split for r in records if r.image_id in (1, 2)} <= {"train", "test"}
    assert sum(r.image_id == 1 for r in records) == 2
    assert all(r.image_ref.endswith(f"{r.image_id:012d}.jpg") for r in records)
    config = ExperimentConfig(data=data)
    assert load_split(config, "val").captions == ("caption 0 of 3", "caption 1 of 3")


@pytest.mark.parametrize(
    "images, annotations, message",
    [
        ([{"id": 1}], [], r"images\[0\]: missing field 'file_name'"),
        ([{"id": "1", "file_name": "a.jpg"}], [], r"images\[0\].id: expected int"),
        ([{"id": 1, "file_name": "a.jpg"}], [{"image_id": 2, "caption": "x"}], r"annotations\[0\].image_id: no image"),
        ([{"id": 1, "file_name": "a.jpg"}], [{"image_id": 1, "caption": 5}], r"annotations\[0\].caption: expected str"),
        ([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], [], r"images\[1\].id: duplicate"),
    ],
)
def test_coco_malformed_names_file_and_field(tmp_path, images, annotations, message):
    path = write_coco(tmp_path / "captions_bad.json", images, annotations)
    with pytest.raises(ValueError, match=message) as error:
        read_coco_captions(path, tmp_path, "train")
    assert "captions_bad.json" in str(error.value)


def test_coco_path_outside_root_refused_or_counted(tmp_path):
    path = write_coco(
        tmp_path / "captions_x.json",
        [{"id": 1, "file_name": "../secret.jpg"}, {"id": 2, "file_name": "ok.jpg"}],
        [{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "b"}],
    )
    with pytest.raises(PathEscapeError, match=r"captions_x.json: images\[0\].file_name.*secret.jpg.*escapes"):
        read_coco_captions(path, tmp_path / "images", "train")
    skips = SkipLog()
    assert [r.caption for r in read_coco_captions(path, tmp_path / "images", "train", skips)] == ["b"]
    assert skips.skipped == {"outside_image_root": 1}


# --- VSE++ precomputed features ---------------------------------------------------------


def test_precomp_five_captions_per_row_dev_as_val_and_feature_rows(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(3, 4)).astype(np.float32)
    np.save(tmp_path / "train_ims.npy", train)
    (tmp_path / "train_caps.txt").write_text("".join(f"c{i}\n" for i in range(15)))
    np.save(tmp_path / "dev_ims.npy", rng.normal(size=(2, 4)).astype(np.float32))
    (tmp_path / "dev_caps.txt").write_text("a\nb\n")  # one row per caption
    records = read_precomp(tmp_path, "train")
    assert [r.image_id for r in records] == [i // 5 for i in range(15)]
    assert records[7].caption == "c7" and records[7].image_ref.endswith("train_ims.npy#1")
    val = read_precomp(tmp_path, "val", image_id_offset=3)
    assert [(r.caption, r.image_id) for r in val] == [("a", 3), ("b", 4)]
    assert read_precomp(tmp_path, "test") == []
    config = ExperimentConfig(
        data=DataConfig(data_dir=str(tmp_path), format="precomp", test_fraction=0.0),
        image=ImageTowerConfig(backbone="features", feature_dim=4),
    )
    split = load_split(config, "train").head(3)
    np.testing.assert_array_equal(split_features(split, "train", config.data, config.image), train)
    assert load_split(config, "val").num_images == 2
    with pytest.raises(ValueError, match="needs image.backbone='features'"):
        load_split(dataclasses.replace(config, image=ImageTowerConfig()), "train")


def test_precomp_count_mismatch_names_both_files(tmp_path):
    np.save(tmp_path / "test_ims.npy", np.zeros((2, 4), np.float32))
    (tmp_path / "test_caps.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"test_caps.txt: 3 captions for the 2 rows of .*test_ims.npy"):
        read_precomp(tmp_path, "test")
    (tmp_path / "train_ims.npy").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="train_caps.txt: missing"):
        read_precomp(tmp_path, "train")


# --- class folders (Corel1k) ---------------------------------------------------------------


def test_class_folders_give_class_text_captions_and_hashed_splits(tmp_path):
    for name in ("sea_shore", "tiger"):
        for index in range(20):
            image(tmp_path / "corel" / name / f"{index}.jpg")
    (tmp_path / "corel" / "descriptions.tsv").write_text("tiger\ta tiger in the grass\n")
    data = DataConfig(
        data_dir=str(tmp_path / "corel"),
        format="folders",
        annotations="descriptions.tsv",
        val_fraction=0.2,
        test_fraction=0.2,
    )
    records = read_records(data, SkipLog())
    assert len(records) == 40 and len({r.image_id for r in records}) == 40
    assert {r.category: r.caption for r in records} == {"sea_shore": "sea shore", "tiger": "a tiger in the grass"}
    splits = by_split(records)
    assert splits["val"] and splits["test"] and len(splits["train"]) > 15
    # the hash depends on the path below the dataset folder, not on where the folder lives
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    (tmp_path / "corel").rename(moved)
    again = by_split(read_records(dataclasses.replace(data, data_dir=str(moved))))
    assert {k: [p.replace(str(moved), "") for p in v] for k, v in again.items()} == {
        k: [p.replace(str(tmp_path / "corel"), "") for p in v] for k, v in splits.items()
    }


# --- Wikipedia / TVGraz pair lists ----------------------------------------------------------


def write_wikipedia(root):
    for number, (text_id, image_id, category) in enumerate(
        [("t1", "img1", "3"), ("t2", "img2", "5"), ("t3", "img3", "3")]
    ):
        image(root / "images" / f"cat{category}" / f"{image_id}.jpg", (number * 50, 0, 0))
        (root / "texts").mkdir(parents=True, exist_ok=True)
        (root / "texts" / f"{text_id}.xml").write_text(
            f"<document><docno>{text_id}</docno>"
            f"<text>Paragraph about {image_id} &amp; more.\n<b>x</b></text></document>"
        )
    (root / "trainset_txt_img_cat.list").write_text("t1\timg1\t3\nt2\timg2\t5\n")
    (root / "testset_txt_img_cat.list").write_text("t3 img3 3\n")


def test_wikipedia_lists_texts_and_images_by_id(tmp_path):
    write_wikipedia(tmp_path)
    records = read_records(DataConfig(data_dir=str(tmp_path), format="wikipedia", val_fraction=0.0))
    assert [(r.split, r.category) for r in records] == [("train", "3"), ("train", "5"), ("test", "3")]
    assert records[0].caption == "Paragraph about img1 &amp; more. x"
    assert records[2].image_ref.endswith("cat3/img3.jpg")
    assert len({r.image_id for r in records}) == 3


def test_wikipedia_bad_line_and_missing_files_named(tmp_path):
    write_wikipedia(tmp_path)
    images = index_images(tmp_path / "images")
    bad = tmp_path / "bad.list"
    bad.write_text("t1 img1 3\nt2 img2\n")
    with pytest.raises(ValueError, match=r"bad.list: line 2: expected 'text_id image_id category'"):
        read_pair_list(bad, tmp_path / "texts", images, "train")
    bad.write_text("t1 nope 3\nt9 img1 3\n")
    with pytest.raises(ValueError, match=r"bad.list: line 1: no image file for image id 'nope'"):
        read_pair_list(bad, tmp_path / "texts", images, "train")
    skips = SkipLog()
    assert read_pair_list(bad, tmp_path / "texts", images, "train", skips) == []
    assert skips.skipped == {"missing_file": 2} and "line 2: no text document t9" in skips.examples["missing_file"][1]


# --- generic JSONL / CSV -------------------------------------------------------------------


def test_jsonl_and_csv_tables(tmp_path):
    (tmp_path / "captions.jsonl").write_text(
        '{"image": "a.jpg", "caption": "one", "split": "train"}\n\n'
        '{"image": "a.jpg", "caption": "two", "split": "train"}\n'
        '{"image": "sub/b.jpg", "caption": "three", "split": "val"}\n'
    )
    records = read_jsonl(tmp_path / "captions.jsonl", tmp_path / "images")
    assert [(r.caption, r.image_id, r.split) for r in records] == [
        ("one", 0, "train"),
        ("two", 0, "train"),
        ("three", 1, "val"),
    ]
    assert records[2].image_ref == str((tmp_path / "images" / "sub" / "b.jpg").resolve())
    (tmp_path / "captions.csv").write_text('caption,extra,image\n"a, quoted caption",x,a.jpg\nplain,y,b.jpg\n')
    records = read_csv(tmp_path / "captions.csv", tmp_path)
    assert [(r.caption, r.image_id, r.split) for r in records] == [("a, quoted caption", 0, ""), ("plain", 1, "")]
    data = DataConfig(data_dir=str(tmp_path), format="csv", val_fraction=0.5, test_fraction=0.0)
    assert {r.split for r in read_records(data)} <= {"train", "val"}


def test_tables_one_file_per_split(tmp_path):
    for split in ("train", "val"):
        (tmp_path / f"{split}.csv").write_text(f"image,caption\n{split}.jpg,{split} caption\n")
    records = read_records(DataConfig(data_dir=str(tmp_path), format="csv", annotations="{split}.csv"))
    assert [(r.split, r.caption, r.image_id) for r in records] == [
        ("train", "train caption", 0),
        ("val", "val caption", 1),
    ]


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "c.jsonl",
            '{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg"}\n',
            r"c.jsonl: line 2: missing field 'caption'",
        ),
        ("c.jsonl", '{"image": "a.jpg", "caption": "x"\n', r"c.jsonl: line 1: invalid JSON"),
        ("c.jsonl", '{"image": 3, "caption": "x"}\n', r"c.jsonl: line 1.image: expected str"),
        (
            "c.jsonl",
            '{"image": "a.jpg", "caption": "x", "split": "dev"}\n',
            r"c.jsonl: line 1.split: unknown split 'dev'",
        ),
        ("c.csv", "img,caption\na.jpg,x\n", r"c.csv: line 1: header lacks column\(s\) \['image'\]"),
        ("c.csv", "caption,image\nx\n", r"c.csv: line 2: 1 cells, the header needs column 'image'"),
        ("c.csv", "", r"c.csv: empty file"),
    ],
)
def test_malformed_tables_name_file_line_and_field(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    reader = read_jsonl if name.endswith("jsonl") else read_csv
    with pytest.raises(ValueError, match=message):
        reader(path, tmp_path)


def test_table_path_escaping_root_is_refused(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"image": "../../etc/passwd", "caption": "x"}\n')
    with pytest.raises(PathEscapeError, match=r"c.jsonl: line 1.image: image path '../../etc/passwd' escapes"):
        read_jsonl(tmp_path / "c.jsonl", tmp_path / "images")


# --- dispatcher -----------------------------------------------------------------------------


def test_split_assignment_keeps_given_splits_and_groups_captions():
    records = [CaptionRecord(f"/d/img{i // 2}.jpg", f"c{i}", i // 2, "") for i in range(400)]
    assigned = assign_splits(records, 0.1, 0.2)
    grouped = {}
    for record in assigned:
        grouped.setdefault(record.image_id, set()).add(record.split)
    assert all(len(splits) == 1 for splits in grouped.values())
    shares = {s: sum(r.split == s for r in assigned) / 400 for s in ("train", "val", "test")}
    assert 0.03 < shares["val"] < 0.2 and 0.1 < shares["test"] < 0.3
    given = [dataclasses.replace(r, split="val" if r.image_id < 5 else "train") for r in records]
    assert {r.split for r in assign_splits(given, 0.1, 0.0)} == {"train", "val"}
    assert sum(r.split == "val" for r in assign_splits(given, 0.1, 0.0)) == 10
    assert group_by_image(assigned).num_captions == 400


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"captions_\{split\}.json: no annotation file"):
        read_records(DataConfig(data_dir=str(tmp_path), format="coco"))
    with pytest.raises(ValueError, match="data.format must be one of"):
        DataConfig(format="parquet")
