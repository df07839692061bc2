"""The one image reader: the same pixels in feature extraction, training, evaluation and the
serving decoder, against PIL's composite (the reloaded SavedModel on these pictures:
``tests/serving/test_export.py``)."""

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from vse_tf.config import ImageTowerConfig
from vse_tf.data.images import decode_rgb
from vse_tf.data.pipeline import eval_image_batches, training_images
from vse_tf.data.records import CaptionRecord, group_by_image
from vse_tf.image.features import picture_reader
from vse_tf.serving.decoding import decode_batch_for_serving

SIZE = 16
BACKGROUND = (0, 128, 255)


def pictures(folder):
    """PNG with graded alpha, palette PNG with a transparent entry, gray + alpha, gray,
    GIF with a transparent colour, animated GIF, BMP: path -> PIL reference composite."""
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (20, 14, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0
    rgba[5:9, :, 3] = 255
    drawing = Image.fromarray(rgba, "RGBA")
    palette = drawing.convert("RGB").quantize(16)
    transparent = palette.getpixel((0, 0))
    frames = [palette, Image.fromarray(255 - rgba[..., :3]).quantize(8)]
    files = {
        "alpha.png": lambda path: drawing.save(path),
        "palette.png": lambda path: palette.save(path, transparency=transparent),
        "gray_alpha.png": lambda path: drawing.convert("LA").save(path),
        "gray.png": lambda path: drawing.convert("L").save(path),
        "transparent.gif": lambda path: palette.save(path, transparency=transparent),
        "animated.gif": lambda path: frames[0].save(
            path, save_all=True, append_images=frames[1:], transparency=transparent
        ),
        "opaque.bmp": lambda path: drawing.convert("RGB").save(path),
    }
    paths = []
    for name, write in files.items():
        write(folder / name)
        paths.append(str(folder / name))
    return paths


def pil_composite(path, background):
    """The reference: PIL's RGBA conversion over an opaque background."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB"))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return pictures(tmp_path_factory.mktemp("pictures"))


@pytest.mark.parametrize("background", [(255, 255, 255), BACKGROUND])
def test_decoded_pixels_are_pils_composite_on_the_background(paths, background):
    for path in paths:
        decoded = decode_rgb(tf.io.read_file(path), background).numpy()
        reference = pil_composite(path, background)
        assert decoded.shape == reference.shape, path
        assert np.abs(decoded.astype(int) - reference).max() <= 1, path


def test_features_training_evaluation_and_serving_read_the_same_pixels(paths, tmp_path):
    records = [CaptionRecord(path, f"picture {i}", i, "train") for i, path in enumerate(paths)]
    split = group_by_image(records)
    config = tiny_config(tmp_path, tmp_path / "run")
    image = ImageTowerConfig(backbone="small_cnn", image_size=SIZE, background=BACKGROUND)
    config = dataclasses.replace(config, image=image)

    load = picture_reader(SIZE, BACKGROUND)
    features = np.stack([load(path)[0] for path in split.image_refs])
    training = np.stack([pixels for pixels, _ in training_images(split, config).as_numpy_iterator()])
    evaluation = np.concatenate(list(eval_image_batches(split, "train", config, batch_size=3).as_numpy_iterator()))
    serve = tf.function(lambda images: decode_batch_for_serving(images, SIZE, background=BACKGROUND))
    serving = serve(tf.stack([tf.io.read_file(p) for p in split.image_refs]))

    # An independent reference: PIL's composite, resized as the reader resizes.
    reference = np.stack(
        [
            np.clip(np.round(tf.image.resize(pil_composite(p, BACKGROUND), [SIZE, SIZE], antialias=True)), 0, 255)
            for p in split.image_refs
        ]
    )
    assert np.abs(features.astype(int) - reference).max() <= 1
    np.testing.assert_array_equal(training, features)
    np.testing.assert_array_equal(evaluation.astype(np.uint8), features)
    np.testing.assert_array_equal(serving.numpy(), features)


def test_a_bad_background_is_named():
    with pytest.raises(ValueError, match="image.background must be three values"):
        ImageTowerConfig(background=(0, 300, 0))
    with pytest.raises(ValueError, match="background must be three values"):
        decode_rgb(tf.constant(io.BytesIO().getvalue()), (1, 2))
