"""Precomputed image features from any image backbone, in the VSE++ precomp layout.

``write_precomp_features`` runs a backbone (``efficientnet_lite0``, ``vgg19``,
``small_cnn``) once over every distinct image of each split and writes, in ``out_dir``:

- ``{split}_ims.npy``: ``float32 [images, F]``, one row per distinct image, in the order
  :func:`vse_tf.data.records.group_by_image` gives (the order ``load_split_features``
  expects when training with ``image.backbone="features"`` and ``data.features_dir``);
- ``{split}_caps.txt``: every caption of the split, one a line, image by image;
- ``features.json``: the record of what made them (:mod:`vse_tf.image.feature_record`:
  backbone, weights file and SHA-256, image size, background, preprocessing), counts and
  image ids per split, the images that could not be decoded (their rows are the features
  of a blank image of the background colour), and warnings for degenerate features.

Pictures are read with the one image reader (:func:`vse_tf.data.images.read_image`), as
training and the exported tower read them: transparent pixels (clip art) are composited
onto ``background`` (white by default). Training on these runs at feature speed: the
backbone is never run again; export puts it back in front of the trained projection.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vse_tf.config import IMAGE_BACKBONES, DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.datasets import read_records
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS
from vse_tf.data.images import WHITE, error_message, read_image
from vse_tf.data.records import CaptionRecord, RetrievalSplit, group_by_image
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_splits
from vse_tf.files import atomic_path, write_text_atomic
from vse_tf.image.feature_record import (
    BACKBONE_WEIGHTS_FILE,
    CLASSIFIER_WEIGHTS,
    EXTRACTOR_WEIGHTS,
    PREPROCESSING,
    RECORD_FILE,
    degenerate_features_warning,
    read_feature_record,
    sha256_file,
)
from vse_tf.image.towers import build_image_tower
from vse_tf.progress import progress_bar

SPLITS = ("train", "val", "test")
MANIFEST = RECORD_FILE
# Native input side of each backbone (small_cnn: the demo's).
DEFAULT_IMAGE_SIZE = {"efficientnet_lite0": 224, "vgg19": 224, "small_cnn": 64}


@dataclasses.dataclass(frozen=True)
class SplitFeatures:
    """One split's features and what went wrong decoding it."""

    features: np.ndarray
    failed: dict[str, str]


def build_feature_extractor(backbone: str, weights: str = "", image_size: int | None = None) -> keras.Model:
    """The image tower's backbone alone: ``float32 [B, S, S, 3]`` pixels 0..255 -> ``[B, F]``.

    It is the image tower up to the input of its projection, so features match what the
    tower computes (same resizing and normalisation).
    """
    if backbone not in IMAGE_BACKBONES or backbone == "features":
        raise ValueError(f"backbone must be one of {[b for b in IMAGE_BACKBONES if b != 'features']}, got {backbone!r}")
    size = image_size or DEFAULT_IMAGE_SIZE[backbone]
    tower = build_image_tower(ImageTowerConfig(backbone=backbone, image_size=size, weights=weights), embed_dim=1)
    return keras.Model(tower.input, tower.get_layer("projection").input, name=f"{backbone}_features")


def picture_reader(image_size: int, background: Sequence[int] = WHITE, max_pixels: int = MAX_IMAGE_PIXELS):
    """``load(path) -> (uint8 [S, S, 3], error)``: the one image reader on a file; on failure
    a blank image of the background colour and the error message (empty when it decoded)."""
    background = tuple(background)
    read = tf.function(
        lambda encoded: read_image(encoded, image_size, background, max_pixels),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    blank = np.empty((image_size, image_size, 3), np.uint8)
    blank[...] = background

    def load(path: str) -> tuple[np.ndarray, str]:
        try:
            return read(tf.io.read_file(path)).numpy(), ""
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            return blank.copy(), f"{type(error).__name__}: {error_message(error)}"

    return load


def extract_features(
    image_paths: Sequence[str],
    extractor: keras.Model,
    batch_size: int = 64,
    progress: bool = False,
    background: Sequence[int] = WHITE,
) -> SplitFeatures:
    """Runs ``extractor`` over images (read with :func:`picture_reader`).

    Returns:
        ``float32 [len(image_paths), F]`` and ``{path: error}`` for images that failed.
    """
    load = picture_reader(int(extractor.input.shape[1]), background)
    failed: dict[str, str] = {}
    run = tf.function(lambda pixels: extractor(pixels, training=False), reduce_retracing=True)
    batches = []
    with progress_bar(len(image_paths), "extracting features", "images", progress) as update:
        for start in range(0, len(image_paths), batch_size):
            batches.append(_extract_batch(run, image_paths[start : start + batch_size], load, failed))
            update(min(start + batch_size, len(image_paths)))
    width = int(extractor.output.shape[-1])
    features = np.concatenate(batches) if batches else np.zeros((0, width), np.float32)
    return SplitFeatures(features.astype(np.float32), failed)


def _extract_batch(run, paths: Sequence[str], load, failed: dict[str, str]) -> np.ndarray:
    """``float32 [len(paths), F]`` for one batch; records decode failures in ``failed``."""
    pixels = []
    for path in paths:
        image, error = load(path)
        if error:
            failed[path] = error
        pixels.append(image)
    return run(tf.constant(np.stack(pixels), tf.float32)).numpy()


def source_data_config(
    source: str | os.PathLike,
    work_dir: str | os.PathLike,
    format: str = "auto",
    image_root: str = "",
    annotations: str = "",
) -> DataConfig:
    """The data config of a dataset to extract features from.

    ``source`` is an Open Clip Art tree (a folder with ``png/`` and ``svg/``: it is written
    as ``work_dir/dataset_openclipart.json`` in the Karpathy layout first), a Karpathy
    ``dataset_<name>.json`` or its folder (``format="auto"``), or a folder in any
    ``data.format`` the project reads (``format`` given, with ``annotations`` and
    ``image_root`` as in :class:`vse_tf.config.DataConfig`).

    Raises:
        FileNotFoundError: ``format="auto"`` found no dataset at ``source``.
    """
    source = Path(source)
    if format == "auto" and source.is_dir() and (source / "png").is_dir() and (source / "svg").is_dir():
        from vse_tf.data.readers.openclipart import openclipart_records, read_openclipart, write_karpathy_json

        drawings, report = read_openclipart(source)
        print(report.describe(), file=sys.stderr)
        write_karpathy_json(
            openclipart_records(drawings)[0], Path(work_dir) / "dataset_openclipart.json", source, "openclipart"
        )
        return DataConfig(data_dir=str(work_dir), dataset="openclipart", image_root=str(source))
    if format not in ("auto", "karpathy"):
        return DataConfig(data_dir=str(source), format=format, annotations=annotations, image_root=image_root)
    json_path = source
    if source.is_dir():
        candidates = sorted(source.glob("dataset_*.json"))
        if len(candidates) > 1:
            raise FileNotFoundError(
                f"{source}: {len(candidates)} Karpathy dataset files ({', '.join(path.name for path in candidates)}); "
                "pass one of them as the source (--images FILE)"
            )
        if not candidates:
            raise FileNotFoundError(
                f"{source}: no dataset_*.json (Karpathy layout) and no png/ + svg/ (Open Clip Art); "
                "for another layout pass its data.format (--format)"
            )
        json_path = candidates[0]
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such dataset file or folder")
    name = json_path.stem.removeprefix("dataset_")
    return DataConfig(data_dir=str(json_path.parent), dataset=name, image_root=image_root)


def dataset_splits(data: DataConfig, names: Sequence[str] = SPLITS) -> dict[str, RetrievalSplit]:
    """The splits exactly as training with ``image.backbone="features"`` reads them (same
    reader, screening and order), so row i of ``{split}_ims.npy`` is image i of the split.
    Splits the dataset lacks are left out."""
    present = {record.split for record in read_records(data, SkipLog())}
    if data.include_restval and "restval" in present:
        present.add("train")
    wanted = [name for name in names if name in present]
    config = ExperimentConfig(data=data, image=ImageTowerConfig(backbone="features"))
    return load_splits(config, wanted, SkipLog())


def write_precomp_features(
    records: Sequence[CaptionRecord],
    out_dir: str | os.PathLike,
    backbone: str,
    weights: str = "",
    image_size: int | None = None,
    batch_size: int = 64,
    splits: Sequence[str] = SPLITS,
    progress: bool = False,
    background: Sequence[int] = WHITE,
) -> dict:
    """:func:`write_split_features` for caption records, grouped by image per split."""
    grouped = {}
    for name in splits:
        split_records = [record for record in records if record.split == name]
        if split_records:
            grouped[name] = group_by_image(split_records)
    return write_split_features(grouped, out_dir, backbone, weights, image_size, batch_size, progress, background)


def write_split_features(
    splits: dict[str, RetrievalSplit],
    out_dir: str | os.PathLike,
    backbone: str,
    weights: str = "",
    image_size: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    background: Sequence[int] = WHITE,
) -> dict:
    """Writes ``{split}_ims.npy``, ``{split}_caps.txt`` and ``features.json`` (see the module doc).

    Returns:
        The record written to ``features.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = build_feature_extractor(backbone, weights, image_size)
    manifest = {
        "backbone": backbone,
        **_weights_record(extractor, out_dir, backbone, weights),
        "image_size": int(extractor.input.shape[1]),
        "feature_dim": int(extractor.output.shape[-1]),
        "background": [int(value) for value in background],
        "preprocessing": PREPROCESSING,
        "splits": {},
        "warnings": [],
    }
    for split_name, split in splits.items():
        if progress:
            print(f"{split_name}: {split.num_images} images", file=sys.stderr)
        result = extract_features(list(split.image_refs), extractor, batch_size, progress, background)
        _write_split(out_dir, split_name, split, result.features)
        manifest["splits"][split_name] = {
            "images": split.num_images,
            "captions": split.num_captions,
            "failed": result.failed,
            "image_ids": [int(value) for value in split.image_ids],
        }
        warning = degenerate_features_warning(result.features, split_name)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
            manifest["warnings"].append(warning)
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def standardize_features(source: str | os.PathLike, target: str | os.PathLike | None = None) -> dict:
    """Z-scores a features folder per dimension with its training split's mean and std.

    Writes ``target`` (default: ``source`` itself): every ``{split}_ims.npy`` as
    ``(x - mean) / std`` in float32 (computed in float64; a zero std counts as 1), the
    captions, the backbone weights when the record keeps them in the folder, and
    ``features.json`` with ``standardization`` (``mean``, ``std`` of the ``train`` split) so
    that the export applies the same map after the recorded backbone. Pretrained features
    of widely different scales per dimension train better so; a random backbone's tiny
    ones (about 1e-11) carry anything only so.

    Returns:
        The new record.

    Raises:
        ValueError: the folder is standardised already, or has no ``train_ims.npy``.
    """
    source = Path(source)
    target = source if target is None else Path(target)
    record = read_feature_record(source)
    if record is None:
        raise ValueError(f"{source}: no {MANIFEST}; standardize a folder python -m train.features wrote")
    if "standardization" in record:
        raise ValueError(f"{source / MANIFEST}: the features are standardised already")
    if not (source / "train_ims.npy").is_file():
        raise ValueError(f"{source}: no train_ims.npy to take the mean and std from")
    train = np.load(source / "train_ims.npy").astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    target.mkdir(parents=True, exist_ok=True)
    for split_name in record["splits"]:
        features = (np.load(source / f"{split_name}_ims.npy").astype(np.float64) - mean) / std
        with atomic_path(target / f"{split_name}_ims.npy") as temporary:
            np.save(temporary, features.astype(np.float32))
        if target != source:
            shutil.copyfile(source / f"{split_name}_caps.txt", target / f"{split_name}_caps.txt")
    if target != source and record["weights_kind"] == EXTRACTOR_WEIGHTS:
        shutil.copyfile(source / record["weights"], target / record["weights"])
    record = {**record, "standardization": {"split": "train", "mean": mean.tolist(), "std": std.tolist()}}
    write_text_atomic(target / MANIFEST, json.dumps(record, indent=2) + "\n")
    return record


def _weights_record(extractor: keras.Model, out_dir: Path, backbone: str, weights: str) -> dict:
    """Where the backbone's weights are, with their SHA-256: the given classifier file, or
    (none given: random initial weights) the extractor's weights saved in ``out_dir``."""
    if weights and backbone != "small_cnn":
        path = Path(weights).resolve()
        return {"weights": str(path), "weights_sha256": sha256_file(path), "weights_kind": CLASSIFIER_WEIGHTS}
    with atomic_path(out_dir / BACKBONE_WEIGHTS_FILE) as temporary:
        extractor.save_weights(str(temporary))
    return {
        "weights": BACKBONE_WEIGHTS_FILE,
        "weights_sha256": sha256_file(out_dir / BACKBONE_WEIGHTS_FILE),
        "weights_kind": EXTRACTOR_WEIGHTS,
    }


def _write_split(out_dir: Path, split_name: str, split: RetrievalSplit, features: np.ndarray) -> None:
    with atomic_path(out_dir / f"{split_name}_ims.npy") as temporary:
        np.save(temporary, features)
    captions = "".join(" ".join(caption.split()) + "\n" for caption in split.captions)
    write_text_atomic(out_dir / f"{split_name}_caps.txt", captions)
