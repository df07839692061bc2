"""Reader for sharded TFRecord datasets (``data.format = "tfrecord"``) written by :mod:`vse_tf.data.shards`.

Layout: ``data_dir/manifest.json`` plus ``data_dir/<split>-<k>-of-<S>.tfrecord``. One
``tf.train.Example`` per distinct image: ``image`` (the encoded file, bytes) or ``features``
(``float [F]``), ``captions`` (bytes list, UTF-8), ``image_id`` (int64), ``category``,
``split`` and ``image_ref`` (the source path, for messages). Image ``i`` of a split sits
in shard ``i mod S``, so a deterministic interleave over the split's shards (one record
from each in turn) gives back the source order.

The records were screened when the shards were written; the manifest keeps that skip
report, and reading a split merges its part into the caller's :class:`SkipLog`.

The training split streams (:class:`ShardedSplit`: counts from the manifest, captions and
ids read on demand, images never held); the evaluation splits are read fully as
:class:`RetrievalSplit`\\ s (captions, ids and categories; their images are read from the
shards in the same order by :func:`shard_image_dataset`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence

import tensorflow as tf

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.records import CaptionRecord, RetrievalSplit
from vse_tf.data.skips import SkipLog

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
ENCODED, FEATURES = "encoded", "features"  # manifest "image_kind": what an Example holds
# Shards read at once by the interleave; up to this many, the stream is in source order.
MAX_OPEN_SHARDS = 64
READ_BUFFER_BYTES = 1 << 18
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class SplitShards:
    """One split's shard files (absolute paths) and counts."""

    files: tuple[str, ...]
    num_images: int
    num_captions: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """``manifest.json``: shards and counts per split, what the Examples hold, the skip report.

    Attributes:
        root: the folder holding the manifest and the shards.
        image_kind: ``encoded`` (image file bytes) or ``features`` (``float [feature_dim]``).
        feature_dim: width of the features (0 for encoded images).
        splits: split name -> its shards.
        skips: ``reader`` (records the readers refused) and each split's screening report,
            as :meth:`SkipLog.to_dict` dicts.
    """

    root: str
    image_kind: str
    feature_dim: int
    splits: dict[str, SplitShards]
    skips: dict[str, dict]

    def split(self, name: str) -> SplitShards:
        if name not in self.splits:
            raise ValueError(
                f"{os.path.join(self.root, MANIFEST_FILE)}: no split {name!r}, it has {sorted(self.splits)}"
            )
        return self.splits[name]

    def skip_log(self, names: Sequence[str]) -> SkipLog:
        """The readers' report plus the screening reports of ``names``, as one :class:`SkipLog`."""
        log = SkipLog()
        for part in ("reader", *names):
            log.merge(skip_log_from_dict(self.skips.get(part, {})))
        return log


def skip_log_from_dict(report: dict) -> SkipLog:
    """The :class:`SkipLog` that :meth:`SkipLog.to_dict` described."""
    log = SkipLog()
    log.skipped.update(report.get("skipped", {}))
    log.repaired.update(report.get("repaired", {}))
    for reason, files in report.get("files", {}).items():
        log.examples[reason] = list(files)
    return log


def read_manifest(root: str | os.PathLike) -> Manifest:
    """Parses ``root/manifest.json``.

    Raises:
        FileNotFoundError: no manifest (the shards were not written, or not to the end).
        ValueError: another format version or a missing field (names the file).
    """
    root = str(root)
    path = os.path.join(root, MANIFEST_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no shard manifest (write one with `python -m export.shards`)")
    with tf.io.gfile.GFile(path, "r") as handle:
        document = json.load(handle)
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: version {document.get('version')!r}, this reader reads {FORMAT_VERSION}")
    try:
        splits = {
            name: SplitShards(
                tuple(os.path.join(root, file) for file in entry["shards"]), entry["images"], entry["captions"]
            )
            for name, entry in document["splits"].items()
        }
        return Manifest(root, document["image_kind"], document["feature_dim"], splits, document["skips"])
    except KeyError as error:
        raise ValueError(f"{path}: missing field {error}") from error


def example_spec(image_kind: str, feature_dim: int, with_image: bool = True) -> dict:
    """The ``tf.io.parse_*example`` features of one shard record."""
    spec = {
        "captions": tf.io.VarLenFeature(tf.string),
        "image_id": tf.io.FixedLenFeature([], tf.int64),
        "category": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image_ref": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if with_image and image_kind == FEATURES:
        spec["features"] = tf.io.FixedLenFeature([feature_dim], tf.float32)
    elif with_image:
        spec["image"] = tf.io.FixedLenFeature([], tf.string)
    return spec


def shard_records(files: Sequence[str], deterministic: bool = True) -> tf.data.Dataset:
    """Serialized Examples of ``files``, one from each open shard in turn (``tf.string []``).

    The file list is the dataset's source, so the tf.data service (``distributed_epoch``)
    hands out whole shards to its workers.
    """
    if not files:
        raise ValueError("no shard files to read")
    return tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES),
        cycle_length=min(len(files), MAX_OPEN_SHARDS),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )


class CaptionStream:
    """The captions of a split's shards, read on each iteration (never all in memory)."""

    def __init__(self, shards: SplitShards, batch_size: int = 1024) -> None:
        self.shards = shards
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.shards.num_captions

    def __iter__(self) -> Iterator[str]:
        for captions in _parsed_batches(self.shards.files, ("captions",), self.batch_size):
            yield from (caption.decode("utf-8") for caption in captions["captions"])


@dataclasses.dataclass(frozen=True)
class ShardedSplit:
    """A training split that streams from shards (in place of a :class:`RetrievalSplit`).

    ``num_images`` / ``num_captions`` come from the manifest; ``captions`` streams;
    ``image_ids`` and ``categories`` (``[N]``, for ``loss.kind="category"`` only) are read
    from the shards when asked for. The images are read by the tf.data pipeline.
    """

    shards: SplitShards
    image_kind: str
    feature_dim: int

    @property
    def files(self) -> tuple[str, ...]:
        return self.shards.files

    @property
    def num_images(self) -> int:
        return self.shards.num_images

    @property
    def num_captions(self) -> int:
        return self.shards.num_captions

    @property
    def captions(self) -> CaptionStream:
        return CaptionStream(self.shards)

    @property
    def image_ids(self) -> tuple[int, ...]:
        return tuple(int(i) for batch in _parsed_batches(self.files, ("image_id",)) for i in batch["image_id"])

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(
            c.decode("utf-8") for batch in _parsed_batches(self.files, ("category",)) for c in batch["category"]
        )


def _parsed_batches(files: Sequence[str], keys: Sequence[str], batch_size: int = 1024) -> Iterator[dict]:
    """NumPy batches of the text fields ``keys`` (captions flattened), in stream order."""
    spec = {key: value for key, value in example_spec(ENCODED, 0, with_image=False).items() if key in keys}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        return {key: parsed[key].values if key == "captions" else parsed[key] for key in keys}

    batches = shard_records(files).batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE).prefetch(2)
    yield from batches.as_numpy_iterator()


def check_image_kind(manifest: Manifest, image: ImageTowerConfig) -> None:
    """Raises ValueError when the shards' content does not fit ``image.backbone``."""
    where = os.path.join(manifest.root, MANIFEST_FILE)
    if manifest.image_kind == FEATURES and image.backbone != "features":
        raise ValueError(f"{where}: the shards hold features; they need image.backbone='features'")
    if manifest.image_kind == FEATURES and image.feature_dim != manifest.feature_dim:
        raise ValueError(f"{where}: features are {manifest.feature_dim} wide, image.feature_dim={image.feature_dim}")
    if manifest.image_kind == ENCODED and image.backbone == "features":
        raise ValueError(f"{where}: the shards hold image files; image.backbone='features' needs feature shards")


def load_shard_splits(
    config: ExperimentConfig, names: Sequence[str], skips: SkipLog
) -> dict[str, RetrievalSplit | ShardedSplit]:
    """The named splits of the shards in ``config.data.data_dir``: ``train`` streams
    (:class:`ShardedSplit`), the others are read fully; the manifest's skip report for the
    readers and these splits is merged into ``skips``."""
    manifest = read_manifest(config.data.data_dir)
    check_image_kind(manifest, config.image)
    skips.merge(manifest.skip_log(names))
    return {
        name: ShardedSplit(manifest.split(name), manifest.image_kind, manifest.feature_dim)
        if name == "train"
        else read_shard_split(manifest.split(name))
        for name in names
    }


def read_shard_records(root: str | os.PathLike) -> list[CaptionRecord]:
    """Every caption of every split of the shards in ``root`` as records (``image_ref`` is the
    source path; the pixels stay in the shards)."""
    manifest = read_manifest(root)
    records = []
    for name, shards in manifest.splits.items():
        split = read_shard_split(shards)
        for caption, image in zip(split.captions, split.caption_to_image):
            records.append(
                CaptionRecord(split.image_refs[image], caption, split.image_ids[image], name, split.categories[image])
            )
    return records


def read_shard_split(shards: SplitShards) -> RetrievalSplit:
    """A whole split (captions, ids, categories, source paths) in stream order; no pixels."""
    image_refs, image_ids, categories, captions, caption_to_image = [], [], [], [], []
    keys = ("captions", "image_id", "category", "image_ref")
    spec = {key: value for key, value in example_spec(ENCODED, 0, with_image=False).items() if key in keys}
    batches = shard_records(shards.files).batch(1024).map(lambda serialized: tf.io.parse_example(serialized, spec))
    for parsed in batches:
        offset = len(image_ids)
        image_refs += [ref.decode("utf-8") for ref in parsed["image_ref"].numpy()]
        image_ids += parsed["image_id"].numpy().tolist()
        categories += [category.decode("utf-8") for category in parsed["category"].numpy()]
        captions += [caption.decode("utf-8") for caption in parsed["captions"].values.numpy()]
        caption_to_image += (offset + parsed["captions"].indices[:, 0].numpy()).tolist()
    return RetrievalSplit(
        tuple(image_refs), tuple(image_ids), tuple(categories), tuple(captions), tuple(caption_to_image)
    )


def streamed_training_images(
    split: ShardedSplit, config: ExperimentConfig, decode: Callable[[tf.Tensor, int], tf.Tensor]
) -> tf.data.Dataset:
    """Like :func:`vse_tf.data.pipeline.training_images`, from shards:
    ``(uint8 [S, S, 3] or float32 [F], (captions tf.string [n], image_id int64 []))``.

    ``decode(encoded, image_size)`` is the pipeline's decoder, so the pixels are those of
    the source layout. Elements that fail to parse or decode are dropped (``ignore_errors``).
    """
    spec = example_spec(split.image_kind, split.feature_dim)
    size = config.image.image_size

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        image = parsed["features"] if split.image_kind == FEATURES else decode(parsed["image"], size)
        return image, (tf.sparse.to_dense(parsed["captions"]), parsed["image_id"])

    records = shard_records(split.files, config.data.deterministic)
    return records.map(parse, num_parallel_calls=AUTOTUNE, deterministic=config.data.deterministic).ignore_errors()


def shard_image_dataset(
    data: DataConfig, split_name: str, image: ImageTowerConfig, decode: Callable[[tf.Tensor, int], tf.Tensor]
) -> tf.data.Dataset:
    """One element per image of a split, in the order :func:`read_shard_split` lists them:
    ``uint8 [S, S, 3]`` pixels or ``float32 [F]`` features."""
    manifest = read_manifest(data.data_dir)
    check_image_kind(manifest, image)
    spec = example_spec(manifest.image_kind, manifest.feature_dim)
    key = "features" if manifest.image_kind == FEATURES else "image"

    def parse(serialized):
        value = tf.io.parse_single_example(serialized, {key: spec[key]})[key]
        return value if key == "features" else decode(value, image.image_size)

    return shard_records(manifest.split(split_name).files).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
