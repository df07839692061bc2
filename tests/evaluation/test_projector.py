import numpy as np
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from vse_tf.data.splits import load_split
from vse_tf.evaluation.encode import EncodedSplit
from vse_tf.evaluation.projector import TILE, write_projector


def test_projector_files_cover_images_then_captions(tiny_dataset, tmp_path):
    split = load_split(tiny_config(tiny_dataset, tmp_path / "run"), "test")
    rng = np.random.default_rng(0)
    encoded = EncodedSplit(split, rng.normal(size=(10, 4)), rng.normal(size=(30, 4)))
    out = write_projector(encoded, tmp_path / "projector", max_images=4)
    rows = (out / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "kind\timage_id\ttext" and len(rows) == 1 + 4 + 12
    assert rows[1].startswith("image\t") and rows[5].startswith("caption\t")
    reader = tf.train.load_checkpoint(str(out))
    points = reader.get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_allclose(points[:4], encoded.image_embeddings[:4], rtol=1e-6)
    np.testing.assert_allclose(points[4:], encoded.caption_embeddings[:12], rtol=1e-6)
    with Image.open(out / "sprite.png") as sprite:
        assert sprite.size == (4 * TILE, 4 * TILE)  # 16 points: a 4x4 grid
        assert sprite.getpixel((TILE * 3 + 1, TILE * 3 + 1)) == (255, 255, 255)  # a caption's blank tile
        assert sprite.getpixel((TILE // 2, TILE // 2)) != (255, 255, 255)  # the first image
    assert 'image_path: "sprite.png"' in (out / "projector_config.pbtxt").read_text()
