"""Evaluation's safety net: an image TensorFlow cannot decode leaves with its captions, named and counted."""

import io

import keras
import numpy as np
from PIL import Image

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.pipeline import eval_image_batches
from vse_tf.data.records import CaptionRecord, group_by_image
from vse_tf.data.skips import SkipLog
from vse_tf.evaluation.encode import decodable_split, encode_images


def image_encoder(size: int) -> keras.Model:
    inputs = keras.Input([size, size, 3])
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, kernel_initializer="glorot_uniform")(pooled))


def write_split(tmp_path):
    records = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (12, 12), (40 * index, 200 - 30 * index, 17 * index)).save(path)
        records += [CaptionRecord(str(path), f"image {index} caption {c}", index, "test") for c in range(index % 3 + 1)]
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), (1, 2, 3)).save(buffer, "PNG")
    broken = bytearray(buffer.getvalue())
    start = broken.index(b"IDAT")
    broken[start + 6 : start + 20] = b"\x00" * 14  # the data stream no longer inflates
    (tmp_path / "2.png").write_bytes(bytes(broken))
    return records


def test_a_bad_test_image_is_left_out_with_its_captions_and_named(tmp_path):
    records = write_split(tmp_path)
    config = ExperimentConfig(data=DataConfig(data_dir=str(tmp_path)), image=ImageTowerConfig(image_size=16))
    encoder = image_encoder(16)
    skips = SkipLog()
    embeddings, split = encode_images(encoder, group_by_image(records), "test", config, skips)
    # the reference: the split built without image 2, encoded by the plain evaluation pipeline
    expected_split = group_by_image([record for record in records if record.image_id != 2])
    expected = encoder.predict(eval_image_batches(expected_split, "test", config), verbose=0)
    assert split == expected_split
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    assert dict(skips.skipped) == {"decode_failed": 3}  # image 2 had three captions
    (where,) = skips.examples["decode_failed"]
    assert where.startswith(str(tmp_path / "2.png")) and "PNG" in where
    assert decodable_split(group_by_image(records), config, SkipLog()) == expected_split
