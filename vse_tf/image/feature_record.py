"""What made a folder of precomputed features (``features.json``), checked where it matters.

``python -m train.features`` writes the record: backbone name, image size, feature width,
background colour and preprocessing, the weights file with its SHA-256 (the given
classifier weights, or the random initial weights saved as ``backbone.weights.h5`` in the
folder when none were given), and per split the image ids row by row. Training on the
folder refuses it when the ids or the metadata do not match the dataset and config
(:func:`check_features_match`); export rebuilds the backbone from the record with the
hash checked (:func:`recorded_backbone`) and puts it in front of the trained projection.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

RECORD_FILE = "features.json"
BACKBONE_WEIGHTS_FILE = "backbone.weights.h5"
# Weights kinds: a classifier ``.weights.h5`` the tower loads, or the extractor's own weights.
CLASSIFIER_WEIGHTS, EXTRACTOR_WEIGHTS = "classifier", "extractor"
PREPROCESSING = (
    "vse_tf.data.images.read_image: gray to RGB, transparency composited onto the background, "
    "resized to image_size x image_size (tf.image.resize, antialias), RGB 0..255 into the backbone"
)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_feature_record(features_dir: str | os.PathLike) -> dict | None:
    """The folder's ``features.json``, or None when it has none (VSE++'s precomp downloads)."""
    path = Path(features_dir) / RECORD_FILE
    if not features_dir or not path.is_file():
        return None
    return json.loads(path.read_text())


def check_features_match(
    features_dir: str | os.PathLike,
    split_name: str,
    image_ids: Sequence[int],
    feature_dim: int,
    background: Sequence[int],
) -> None:
    """Refuses features whose record disagrees with the dataset split or the image config.

    Raises:
        ValueError: one line naming the record, the split and what differs.
    """
    record = read_feature_record(features_dir)
    if record is None:
        return
    where = f"{Path(features_dir) / RECORD_FILE}"
    again = "extract them again (python -m train.features) or point data.features_dir elsewhere"
    if record.get("feature_dim") != feature_dim:
        raise ValueError(
            f"{where}: {record.get('backbone')} features are {record.get('feature_dim')}-d, "
            f"image.feature_dim is {feature_dim}; {again}"
        )
    if tuple(record.get("background", ())) != tuple(background):
        raise ValueError(
            f"{where}: features made on background {tuple(record.get('background', ()))}, image.background is "
            f"{tuple(background)}; {again}"
        )
    split = record.get("splits", {}).get(split_name)
    if split is None:
        raise ValueError(f"{where}: no split {split_name!r} in the features; {again}")
    if "image_ids" not in split:  # a record from before ids were kept: the row count is checked on loading
        return
    recorded, wanted = [int(value) for value in split["image_ids"]], [int(value) for value in image_ids]
    if recorded != wanted:
        row = next((i for i, (a, b) in enumerate(zip(recorded, wanted)) if a != b), min(len(recorded), len(wanted)))
        found = recorded[row] if row < len(recorded) else "nothing"
        expected = wanted[row] if row < len(wanted) else "nothing"
        raise ValueError(
            f"{where}: split {split_name!r} has {len(recorded)} images in the features and {len(wanted)} in the "
            f"dataset; row {row} is image id {found} there, {expected} here; {again}"
        )


def recorded_backbone(features_dir: str | os.PathLike, record: dict) -> keras.Model:
    """The backbone that made the features: ``float32 [B, S, S, 3]`` -> ``[B, F]``.

    Raises:
        FileNotFoundError: the recorded weights file is missing.
        ValueError: its SHA-256 differs from the record (the weights changed since).
    """
    from vse_tf.image.features import build_feature_extractor

    path = Path(record["weights"])
    if not path.is_absolute():
        path = Path(features_dir) / path
    if not path.is_file():
        raise FileNotFoundError(f"{Path(features_dir) / RECORD_FILE}: the backbone weights {path} are missing")
    actual = sha256_file(path)
    if actual != record["weights_sha256"]:
        raise ValueError(
            f"{path}: SHA-256 {actual} differs from {record['weights_sha256']} recorded in "
            f"{Path(features_dir) / RECORD_FILE}: these are not the weights that made the features"
        )
    size = int(record["image_size"])
    if record["weights_kind"] == CLASSIFIER_WEIGHTS:
        extractor = build_feature_extractor(record["backbone"], str(path), size)
    else:
        extractor = build_feature_extractor(record["backbone"], "", size)
        extractor.load_weights(str(path))
    return _standardized(extractor, record.get("standardization"))


def _standardized(extractor: keras.Model, standardization: dict | None) -> keras.Model:
    """``extractor`` followed by ``(x - mean) / std`` when the record holds a standardization."""
    if not standardization:
        return extractor
    mean = np.asarray(standardization["mean"], np.float64)
    std = np.asarray(standardization["std"], np.float64)
    if mean.shape != std.shape or mean.shape != (int(extractor.output.shape[-1]),):
        raise ValueError(
            f"{RECORD_FILE}: standardization of {mean.shape[0]} dims, the backbone gives {extractor.output.shape[-1]}"
        )
    scaled = keras.layers.Rescaling(
        scale=(1.0 / std).astype(np.float32), offset=(-mean / std).astype(np.float32), name="feature_standardization"
    )(extractor.output)
    return keras.Model(extractor.input, scaled, name=f"{extractor.name}_standardized")


def degenerate_features_warning(features: np.ndarray, split_name: str) -> str:
    """A warning when ``float32 [N, F]`` features cannot tell images apart, else ``""``.

    Near-zero rows (mean norm below 1e-6) or rows all within 0.1% of their mean (a backbone
    with no useful weights gives every image about the same vector).
    """
    if len(features) == 0:
        return ""
    features = np.asarray(features, np.float64)
    norms = np.linalg.norm(features, axis=1)
    if norms.mean() < 1e-6:
        return f"{split_name}: degenerate features: mean norm {norms.mean():.2e}, every image about zero"
    spread = np.linalg.norm(features - features.mean(axis=0), axis=1).max()
    if len(features) > 1 and spread < 1e-3 * norms.mean():
        return (
            f"{split_name}: degenerate features: every row within {spread / norms.mean():.1e} of the mean row "
            "(relative); the backbone does not tell these images apart (weights missing?)"
        )
    return ""
