"""Precomputed features (VSE++ precomp layout) and training on them at feature speed."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import naive_recall_at_1, tiny_config
from PIL import Image

from train.features import main as features_main
from vse_tf.config import ImageTowerConfig
from vse_tf.data.pipeline import split_features
from vse_tf.data.readers.precomp import read_precomp
from vse_tf.evaluation.encode import encode_split, evaluate_run
from vse_tf.evaluation.metrics import METRIC_KEYS, evaluate_retrieval
from vse_tf.image.backbones.efficientnet_lite import build_efficientnet_lite0
from vse_tf.image.feature_record import degenerate_features_warning, recorded_backbone
from vse_tf.image.features import (
    build_feature_extractor,
    dataset_splits,
    extract_features,
    picture_reader,
    source_data_config,
)
from vse_tf.serving.export import export_run
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
def test_features_then_fit_then_export_takes_image_bytes_like_any_run(tiny_dataset, tmp_path, capsys):
    weights = tmp_path / "lite0_random.weights.h5"
    build_efficientnet_lite0(include_top=True).save_weights(str(weights))
    out = tmp_path / "features"
    arguments = ["--images", str(tiny_dataset), "--backbone", "efficientnet_lite0", "--weights", str(weights)]
    code = features_main([*arguments, "--image_size", "16", "--out", str(out)])
    assert code == 0 and "train: 32 images x 1280" in capsys.readouterr().out
    manifest = json.loads((out / "features.json").read_text())
    assert manifest["feature_dim"] == 1280 and manifest["splits"]["test"]["failed"] == {}
    assert (manifest["backbone"], manifest["image_size"], manifest["background"]) == (
        "efficientnet_lite0",
        16,
        [255] * 3,
    )
    assert (
        manifest["weights"] == str(weights)
        and manifest["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    splits = dataset_splits(source_data_config(tiny_dataset, tmp_path))
    assert sorted(splits) == ["test", "train", "val"]
    for split, grouped in splits.items():
        features = np.load(out / f"{split}_ims.npy")
        assert features.shape == (grouped.num_images, 1280) and np.isfinite(features).all()
        assert (out / f"{split}_caps.txt").read_text().splitlines() == list(grouped.captions)
        assert manifest["splits"][split]["image_ids"] == list(grouped.image_ids)
    # the precomp reader reads the split back: three captions per row, in order
    assert [record.caption for record in read_precomp(out, "test")] == list(splits["test"].captions)

    config = tiny_config(tiny_dataset, tmp_path / "run")
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, features_dir=str(out)),
        image=ImageTowerConfig(backbone="features", feature_dim=1280),
    )
    run = train(config, verbose=0)
    assert run.model.image_encoder.input.shape[-1] == 1280  # the tower reads features, not pixels
    metrics = evaluate_run(run, "test")  # the test split's rows come from test_ims.npy
    encoded = encode_split(run, "test")
    features = np.load(out / "test_ims.npy")
    from_features = run.model.image_encoder.predict(features, verbose=0)
    np.testing.assert_allclose(from_features, encoded.image_embeddings, atol=1e-5)
    naive = naive_recall_at_1(encoded.image_embeddings, encoded.caption_embeddings, encoded.split.caption_to_image)
    assert {key: metrics[key] for key in naive} == pytest.approx(naive)

    # The export puts the recorded backbone in front: image bytes in, as for any run.
    paths = export_run(run, tmp_path / "models")
    image_tower = tf.saved_model.load(str(paths["image_encoder"]))
    assert set(image_tower.signatures) == {"serving_default", "pixels", "features"}
    encoded_images = tf.stack([tf.io.read_file(path) for path in encoded.split.image_refs])
    from_bytes = image_tower.signatures["serving_default"](images=encoded_images)["embeddings"].numpy()
    np.testing.assert_allclose(from_bytes, from_features, atol=1e-4)
    served_features = image_tower.signatures["features"](features=tf.constant(features))["embeddings"].numpy()
    np.testing.assert_allclose(served_features, from_features, atol=1e-5)
    assert json.loads((paths["image_encoder"] / "assets.extra" / "features.json").read_text()) == manifest
    text_tower = tf.saved_model.load(str(paths["text_encoder"])).signatures["serving_default"]
    captions = text_tower(sentences=tf.constant(encoded.split.captions))["embeddings"].numpy()
    exported = evaluate_retrieval(from_bytes, captions, encoded.split.caption_to_image)
    assert {key: exported[key] for key in METRIC_KEYS} == pytest.approx({key: metrics[key] for key in METRIC_KEYS})

    # Features of other images, or changed weights, are refused with one line.
    record = json.loads((out / "features.json").read_text())
    record["splits"]["train"]["image_ids"][3] += 1000
    (out / "features.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="split 'train' has 32 images .* row 3 is image id 1003 there, 3 here"):
        split_features(run_split(config, "train"), "train", config.data, config.image)
    with weights.open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ValueError, match="SHA-256 .* differs"):
        recorded_backbone(out, manifest)


def run_split(config, name):
    from vse_tf.data.skips import SkipLog
    from vse_tf.data.splits import load_split

    return load_split(config, name, SkipLog())


def test_degenerate_features_are_named():
    rows = np.random.default_rng(0).normal(size=(5, 8))
    assert degenerate_features_warning(rows, "train") == ""
    assert "every image about zero" in degenerate_features_warning(np.zeros((5, 8)), "train")
    constant = np.ones((5, 8)) + 1e-7 * rows
    assert "does not tell these images apart" in degenerate_features_warning(constant, "val")
    assert degenerate_features_warning(np.ones((1, 8)), "test") == ""  # one image: nothing to tell apart


def test_source_is_found_or_named(tiny_dataset, tmp_path):
    data = source_data_config(tiny_dataset, tmp_path, format="karpathy")
    assert (data.data_dir, data.dataset, data.format) == (str(tiny_dataset), "tiny", "karpathy")
    assert source_data_config(tiny_dataset / "dataset_tiny.json", tmp_path) == data
    assert (
        source_data_config(tmp_path, tmp_path, format="coco", annotations="c_{split}.json").annotations
        == "c_{split}.json"
    )
    with pytest.raises(FileNotFoundError, match="no dataset_\\*.json .* pass its data.format"):
        source_data_config(tmp_path, tmp_path)
    (tiny_dataset / "dataset_other.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="dataset_other.json, dataset_tiny.json.* pass one of them"):
        source_data_config(tiny_dataset, tmp_path)


def test_standardized_features_are_z_scores_and_the_recorded_backbone_applies_them(tiny_dataset, tmp_path, capsys):
    from vse_tf.image.features import standardize_features

    raw, standardized = tmp_path / "raw", tmp_path / "z"
    arguments = ["--images", str(tiny_dataset), "--backbone", "small_cnn", "--image_size", "16"]
    assert features_main([*arguments, "--out", str(raw)]) == 0
    assert features_main([*arguments, "--out", str(tmp_path / "cli"), "--standardize"]) == 0
    assert "standardised" in capsys.readouterr().out
    assert "standardization" in json.loads((tmp_path / "cli" / "features.json").read_text())
    standardize_features(raw, standardized)  # beside the raw folder, from its features
    train = np.load(raw / "train_ims.npy").astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    for split in ("train", "val", "test"):  # the reference: float64 z-scores of the raw features
        expected = (np.load(raw / f"{split}_ims.npy").astype(np.float64) - mean) / std
        np.testing.assert_allclose(np.load(standardized / f"{split}_ims.npy"), expected, rtol=1e-5, atol=1e-5)
    record = json.loads((standardized / "features.json").read_text())
    assert record["standardization"]["split"] == "train" and len(record["standardization"]["mean"]) == train.shape[1]
    # the exported route: the recorded backbone then the same affine map, on the pictures themselves
    split = dataset_splits(source_data_config(tiny_dataset, tmp_path))["test"]
    pixels = np.stack([picture_reader(16)(path)[0] for path in split.image_refs]).astype(np.float32)
    backbone = recorded_backbone(standardized, record)
    np.testing.assert_allclose(backbone(pixels).numpy(), np.load(standardized / "test_ims.npy"), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="standardised already"):
        standardize_features(standardized)
