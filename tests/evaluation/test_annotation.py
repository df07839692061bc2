import numpy as np
import pytest
from PIL import Image

from vse_tf.data.readers.folders import read_class_folders
from vse_tf.evaluation.annotation import annotation_report, export_class_folders


def make_tree(root, classes=("sea_shore", "tiger", "bus"), per_class=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(root / name / f"{index}.jpg")
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_class_folders_and_texts(tmp_path):
    data = read_class_folders(make_tree(tmp_path / "corel"))
    assert len(data.image_paths) == 9 and data.labels[:3] == ("bus", "bus", "bus")
    assert data.class_texts == {"bus": "bus", "sea_shore": "sea shore", "tiger": "tiger"}
    descriptions = tmp_path / "descriptions.tsv"
    descriptions.write_text("tiger\ta tiger in the grass\nunknown\tignored\n")
    assert read_class_folders(tmp_path / "corel", descriptions).class_texts["tiger"] == "a tiger in the grass"
    descriptions.write_text("tiger a tiger\n")
    with pytest.raises(ValueError, match=r"descriptions.tsv: line 1"):
        read_class_folders(tmp_path / "corel", descriptions)
    with pytest.raises(FileNotFoundError, match="no images"):
        (tmp_path / "empty" / "class").mkdir(parents=True)
        read_class_folders(tmp_path / "empty")


def test_report_on_ideal_and_on_confused_embeddings():
    names = ["bus", "tiger", "sea_shore"]
    labels = ["bus", "bus", "tiger", "sea_shore"]
    classes = np.eye(3, dtype=np.float32)
    ideal = annotation_report(classes[[0, 0, 1, 2]], labels, names, classes)
    assert ideal.top1 == 100.0 and ideal.image_to_class_map == pytest.approx(1.0)
    assert ideal.class_to_image_map == pytest.approx(1.0)
    confused = annotation_report(classes[[1, 0, 1, 2]], labels, names, classes)  # first bus looks like a tiger
    assert confused.top1 == 75.0 and confused.per_class_top1["bus"] == 50.0 and confused.top5 == 100.0


def test_export_class_folders_holds_the_images_inside_the_tree(tmp_path):
    image = tmp_path / "a.jpg"
    Image.new("RGB", (4, 4)).save(image)
    out = export_class_folders([str(image)], ["circle"], tmp_path / "tree")
    exported = out / "circle" / "a.jpg"
    assert not exported.is_symlink() and exported.read_bytes() == image.read_bytes()
    assert exported.resolve().is_relative_to(out.resolve())  # the folders reader accepts it
    with pytest.raises(ValueError, match="no category"):
        export_class_folders([str(image)], [""], tmp_path / "tree2")
