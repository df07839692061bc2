import json

import pytest

from vse_tf.data.readers.karpathy import read_karpathy_json
from vse_tf.data.records import group_by_image


def write(path, document):
    path.write_text(json.dumps(document))
    return path


def test_reads_splits_in_file_order(tiny_dataset):
    records = read_karpathy_json(tiny_dataset / "dataset_tiny.json", tiny_dataset / "images", ("test",))
    assert len(records) == 10 * 3
    assert {record.split for record in records} == {"test"}
    split = group_by_image(records)
    assert split.num_images == 10 and split.num_captions == 30
    assert split.caption_to_image[:6] == (0, 0, 0, 1, 1, 1)
    assert all(ref.endswith(".png") and (tiny_dataset / "images").as_posix() in ref for ref in split.image_refs)
    assert split.head(2).num_captions == 6


def test_coco_style_filepath_and_ids(tmp_path):
    path = write(
        tmp_path / "dataset_coco.json",
        {
            "images": [
                {
                    "filepath": "val2014",
                    "filename": "a.jpg",
                    "cocoid": 42,
                    "split": "restval",
                    "sentences": [{"raw": "x"}],
                },
                {
                    "filepath": "val2014",
                    "filename": "b.jpg",
                    "cocoid": 43,
                    "split": "test",
                    "sentences": [{"raw": "y"}],
                },
            ]
        },
    )
    records = read_karpathy_json(path, tmp_path, ("train", "restval"))
    assert [(r.image_id, r.caption, r.split) for r in records] == [(42, "x", "restval")]
    assert records[0].image_ref == str((tmp_path / "val2014" / "a.jpg").resolve())


@pytest.mark.parametrize(
    "document, message",
    [
        ({"images": {}}, "'images' must be a list"),
        ({"images": [{"filename": "a.jpg", "sentences": []}]}, r"images\[0\]: missing field 'split'"),
        ({"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]}, r"images\[0\].split: unknown split"),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"tokens": []}]}]},
            r"sentences\[0\]: missing field 'raw'",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "imgid": "7", "sentences": []}]},
            r"imgid: expected an integer",
        ),
    ],
)
def test_malformed_json_names_file_and_field(tmp_path, document, message):
    path = write(tmp_path / "dataset_bad.json", document)
    with pytest.raises(ValueError, match=message) as error:
        read_karpathy_json(path, tmp_path)
    assert "dataset_bad.json" in str(error.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "dataset_broken.json"
    path.write_text('{"images": [\n{"filename": }]}')
    with pytest.raises(ValueError, match=r"dataset_broken.json: invalid JSON at line 2"):
        read_karpathy_json(path, tmp_path)


def test_paths_escaping_the_image_root_are_refused(tmp_path):
    path = write(
        tmp_path / "dataset_x.json",
        {"images": [{"filename": "../../etc/passwd", "split": "train", "sentences": [{"raw": "x"}]}]},
    )
    with pytest.raises(ValueError, match=r"passwd.*escapes the image root"):
        read_karpathy_json(path, tmp_path / "images")
