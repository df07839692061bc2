"""Precomputed features (VSE++ precomp layout) and training on them at feature speed."""

import json

import numpy as np
import pytest
from conftest import naive_recall_at_1, tiny_config
from PIL import Image

from train.features import main as features_main
from vse_tf.config import DataConfig, ImageTowerConfig
from vse_tf.data.readers.precomp import read_precomp
from vse_tf.evaluation.encode import encode_split, evaluate_run
from vse_tf.image.features import (
    build_feature_extractor,
    dataset_splits,
    extract_features,
    picture_reader,
    source_data_config,
)
from vse_tf.training.trainer import train


def test_transparent_pixels_become_the_background_and_bad_files_are_counted(tmp_path):
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[:4] = (10, 20, 30, 255)  # top half opaque, bottom half fully transparent (black RGB)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "clip.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    image, error = picture_reader(8)(str(tmp_path / "clip.png"))
    assert error == "" and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(image[7, 7], (255, 255, 255))
    np.testing.assert_array_equal(picture_reader(8, (0, 0, 90))(str(tmp_path / "clip.png"))[0][7, 7], (0, 0, 90))
    large, error = picture_reader(8, max_pixels=63)(str(tmp_path / "clip.png"))
    assert "image too large: it declares a raster of 64 pixels; the limit is 63" in error and (large == 255).all()
    extractor = build_feature_extractor("small_cnn", image_size=16)
    paths = [str(tmp_path / "clip.png"), str(tmp_path / "broken.png")]
    result = extract_features(paths, extractor, batch_size=1)
    assert result.features.shape == (2, extractor.output.shape[-1])
    assert list(result.failed) == [paths[1]] and "broken.png" in paths[1]


@pytest.mark.slow
def test_features_command_writes_precomp_and_training_runs_on_it(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "features"
    code = features_main(["--images", str(tiny_dataset), "--backbone", "efficientnet_lite0", "--out", str(out)])
    assert code == 0 and "train: 32 images x 1280" in capsys.readouterr().out
    manifest = json.loads((out / "features.json").read_text())
    assert manifest["feature_dim"] == 1280 and manifest["splits"]["test"]["failed"] == {}
    splits = dataset_splits(source_data_config(tiny_dataset, tmp_path))
    assert sorted(splits) == ["test", "train", "val"]
    for split, grouped in splits.items():
        features = np.load(out / f"{split}_ims.npy")
        assert features.shape == (grouped.num_images, 1280) and np.isfinite(features).all()
        assert (out / f"{split}_caps.txt").read_text().splitlines() == list(grouped.captions)
    # the precomp reader reads the split back: three captions per row, in order
    assert [record.caption for record in read_precomp(out, "test")] == list(splits["test"].captions)

    config = tiny_config(tiny_dataset, tmp_path / "run")
    config = config.__class__(
        **{
            **config.__dict__,
            "data": DataConfig(**{**config.data.__dict__, "features_dir": str(out)}),
            "image": ImageTowerConfig(backbone="features", feature_dim=1280),
        }
    )
    run = train(config, verbose=0)
    assert run.model.image_encoder.input.shape[-1] == 1280  # the tower reads features, not pixels
    metrics = evaluate_run(run, "test")  # the test split's rows come from test_ims.npy
    assert {"rsum", "i2t_map", "t2i_map"} <= set(metrics)
    encoded = encode_split(run, "test")
    features = np.load(out / "test_ims.npy")
    np.testing.assert_allclose(
        run.model.image_encoder.predict(features, verbose=0), encoded.image_embeddings, atol=1e-5
    )
    naive = naive_recall_at_1(encoded.image_embeddings, encoded.caption_embeddings, encoded.split.caption_to_image)
    assert {key: metrics[key] for key in naive} == pytest.approx(naive)


def test_source_is_found_or_named(tiny_dataset, tmp_path):
    data = source_data_config(tiny_dataset, tmp_path, format="karpathy")
    assert (data.data_dir, data.dataset, data.format) == (str(tiny_dataset), "tiny", "karpathy")
    assert source_data_config(tiny_dataset / "dataset_tiny.json", tmp_path) == data
    assert (
        source_data_config(tmp_path, tmp_path, format="coco", annotations="c_{split}.json").annotations
        == "c_{split}.json"
    )
    with pytest.raises(FileNotFoundError, match="expected one dataset_\\*.json"):
        source_data_config(tmp_path, tmp_path)
