"""Writing any dataset vse_tf reads into sharded TFRecord files plus a manifest.

``write_shards(config, out_dir, shard_records)`` reads the dataset of ``config.data`` in
its ``data.format`` (:func:`vse_tf.data.datasets.read_records`), screens each split once
(:func:`vse_tf.data.screening.screen_records`, the same reasons and counts as training
from the source), groups it by image and writes one ``tf.train.Example`` per distinct
image (the layout is in :mod:`vse_tf.data.readers.tfrecord`): the encoded image file as
it is on disk, or, for ``image.backbone = "features"``, its feature row. Image ``i`` of a
split goes to shard ``i mod S``. Every shard is written under a temporary name and
renamed; the manifest comes last, so a folder without one is incomplete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.data.datasets import read_records, select_splits
from vse_tf.data.pipeline import split_features
from vse_tf.data.readers.tfrecord import ENCODED, FEATURES, FORMAT_VERSION, MANIFEST_FILE
from vse_tf.data.records import RetrievalSplit, group_by_image
from vse_tf.data.screening import screen_records
from vse_tf.data.skips import SkipLog
from vse_tf.files import write_text_atomic

SPLITS = ("train", "val", "test", "restval")


@dataclasses.dataclass(frozen=True)
class ShardReport:
    """What :func:`write_shards` wrote: the manifest path and the manifest itself."""

    manifest_path: Path
    manifest: dict

    def describe(self) -> str:
        parts = [
            f"{name} {entry['images']} images / {entry['captions']} captions in {len(entry['shards'])} shards"
            for name, entry in self.manifest["splits"].items()
        ]
        return f"{self.manifest_path.parent}: " + "; ".join(parts)


def write_shards(
    config: ExperimentConfig, out_dir: str | os.PathLike, shard_records: int = 1000, workers: int = 8
) -> ShardReport:
    """Writes the dataset of ``config`` as TFRecord shards of ``shard_records`` images each.

    ``train`` includes ``restval`` when ``data.include_restval``; a split the dataset does
    not have is left out (``train`` is required). The manifest lists each split's shards,
    images and captions, and the skip report: ``reader`` (records the readers refused, over
    the whole dataset) and each split's screening.

    Raises:
        ValueError: ``shard_records < 1``, no training records, or every record of a split skipped.
    """
    if shard_records < 1:
        raise ValueError(f"shard_records must be >= 1, got {shard_records}")
    if config.data.format == "tfrecord":
        raise ValueError(f"{config.data.data_dir}: data.format='tfrecord' is sharded already")
    if config.data.format == "precomp" and config.image.backbone != "features":
        raise ValueError("data.format='precomp' holds features: it needs image.backbone='features'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader_skips = SkipLog()
    records = read_records(config.data, reader_skips)
    skips = {"reader": reader_skips.to_dict()}
    entries = {}
    kind = FEATURES if config.image.backbone == "features" else ENCODED
    for name, wanted in _split_choices(config, {record.split for record in records}):
        split_skips = SkipLog()
        kept = screen_records(
            select_splits(records, wanted),
            split_skips,
            check_images=kind == ENCODED,
            max_image_pixels=config.data.max_image_pixels,
        )
        skips[name] = split_skips.to_dict()
        if not kept:
            raise ValueError(f"{config.data.data_dir}: every record of split(s) {wanted} was skipped")
        split = group_by_image(kept)
        features = split_features(split, name, config.data, config.image) if kind == FEATURES else None
        files = _write_split(out, name, split, features, shard_records, workers)
        entries[name] = {"images": split.num_images, "captions": split.num_captions, "shards": files}
    manifest = {
        "version": FORMAT_VERSION,
        "image_kind": kind,
        "feature_dim": config.image.feature_dim if kind == FEATURES else 0,
        "source": dataclasses.asdict(config.data),
        "splits": entries,
        "skips": skips,
    }
    path = out / MANIFEST_FILE
    write_text_atomic(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "backslashreplace")
    return ShardReport(path, manifest)


def _split_choices(config: ExperimentConfig, present: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``[(split written, source splits it holds)]``."""
    if "train" not in present:
        raise ValueError(f"{config.data.data_dir}: no training records")
    restval_in_train = config.data.include_restval
    choices = [("train", ("train", "restval") if restval_in_train else ("train",))]
    return choices + [
        (name, (name,)) for name in SPLITS[1:] if name in present and not (name == "restval" and restval_in_train)
    ]


def _write_split(
    out: Path, name: str, split: RetrievalSplit, features: np.ndarray | None, shard_records: int, workers: int
) -> list[str]:
    """Writes the split's images round-robin into ``ceil(N / shard_records)`` shards; their file names."""
    count = -(-split.num_images // shard_records)
    captions: list[list[str]] = [[] for _ in range(split.num_images)]
    for caption, image in zip(split.captions, split.caption_to_image):
        captions[image].append(caption)
    files = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for shard in range(count):
            file_name = f"{name}-{shard:05d}-of-{count:05d}.tfrecord"
            images = range(shard, split.num_images, count)
            payloads = pool.map(_read_bytes, (split.image_refs[i] for i in images)) if features is None else None
            partial = out / (file_name + ".partial")
            with tf.io.TFRecordWriter(str(partial)) as writer:
                for index in images:
                    image = features[index] if features is not None else next(payloads)
                    writer.write(_example(split, index, captions[index], image, name).SerializeToString())
            os.replace(partial, out / file_name)
            files.append(file_name)
    return files


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _example(
    split: RetrievalSplit, index: int, captions: Sequence[str], image: bytes | np.ndarray, name: str
) -> tf.train.Example:
    feature = {
        "captions": _bytes([caption.encode("utf-8") for caption in captions]),
        "image_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[split.image_ids[index]])),
        "category": _bytes([split.categories[index].encode("utf-8")]),
        "split": _bytes([name.encode("utf-8")]),
        "image_ref": _bytes([split.image_refs[index].encode("utf-8", errors="backslashreplace")]),
    }
    if isinstance(image, bytes):
        feature["image"] = _bytes([image])
    else:
        feature["features"] = tf.train.Feature(float_list=tf.train.FloatList(value=image))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _bytes(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
