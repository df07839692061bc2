"""From a data config to screened, grouped splits: read -> choose splits -> screen -> group.

Plain Python (readers + Pillow screening); the tf.data side is :mod:`vse_tf.data.pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vse_tf.config import ExperimentConfig
from vse_tf.data.datasets import read_records, select_splits
from vse_tf.data.records import CaptionRecord, RetrievalSplit, group_by_image
from vse_tf.data.screening import screen_records
from vse_tf.data.skips import SkipLog


def load_splits(
    config: ExperimentConfig,
    names: Sequence[str],
    skips: SkipLog,
    split_skips: dict[str, SkipLog] | None = None,
) -> dict[str, RetrievalSplit]:
    """Reads the dataset once and returns each named split, screened and grouped by image.

    ``train`` includes ``restval`` when ``data.include_restval`` is set. Records refused
    by the readers (over the whole dataset) and by the screening (over these splits) are
    counted in ``skips``; with ``split_skips``, the readers' part is also kept under
    ``"dataset"`` and each split's screening under its name. Image files are not checked
    for the ``features`` backbone.

    Raises:
        ValueError: a split has no captions, or none left after screening.
    """
    if config.data.format == "tfrecord":  # screened when written; the train split streams
        from vse_tf.data.readers.tfrecord import load_shard_splits

        return load_shard_splits(config, names, skips)
    if config.data.format == "precomp" and config.image.backbone != "features":
        raise ValueError(
            f"data.format='precomp' holds features, not images: it needs image.backbone='features', "
            f"got {config.image.backbone!r}"
        )
    check_features_dir(config, names)
    reading = SkipLog()
    records = read_records(config.data, reading)
    skips.merge(reading)
    if split_skips is not None:
        split_skips["dataset"] = reading
    splits = {}
    for name in names:
        screening = SkipLog()
        splits[name] = _screened_split(config, records, name, screening)
        skips.merge(screening)
        if split_skips is not None:
            split_skips[name] = screening
    return splits


def check_features_dir(config: ExperimentConfig, names: Sequence[str]) -> None:
    """For the ``features`` backbone with a ``data.features_dir`` (outside the ``precomp``
    format, whose records name their rows): the folder must hold ``<split>_ims.npy`` for
    every split named, checked before anything is read.

    Raises:
        FileNotFoundError: a split's file is missing (the message names the folder, the
            file, and the ``*_ims.npy`` files it does hold).
    """
    folder = config.data.features_dir
    if config.image.backbone != "features" or config.data.format == "precomp" or not folder:
        return
    for name in names:
        path = Path(folder) / f"{name}_ims.npy"
        if not path.is_file():
            present = sorted(item.name for item in Path(folder).glob("*_ims.npy")) if Path(folder).is_dir() else []
            found = f"it holds {present}" if present else "it holds no *_ims.npy"
            raise FileNotFoundError(
                f"data.features_dir={folder!r}: no {path.name} ({found}; python -m train.features writes them)"
            )


def _screened_split(
    config: ExperimentConfig, records: Sequence[CaptionRecord], name: str, skips: SkipLog
) -> RetrievalSplit:
    wanted = ("train", "restval") if name == "train" and config.data.include_restval else (name,)
    chosen = select_splits(records, wanted)
    if not chosen:
        raise ValueError(f"{_source(config)}: no captions in split(s) {wanted}")
    kept = screen_records(
        chosen,
        skips,
        check_images=config.image.backbone != "features",
        max_image_pixels=config.data.max_image_pixels,
    )
    if not kept:
        raise ValueError(f"{_source(config)}: every record of split(s) {wanted} was skipped ({skips.summary()})")
    return group_by_image(kept)


def _source(config: ExperimentConfig) -> str:
    data = config.data
    if data.format == "karpathy" and not data.annotations:
        return str(data.json_path())
    return f"{data.data_dir} (data.format={data.format})"


def load_split(config: ExperimentConfig, split: str, skips: SkipLog | None = None) -> RetrievalSplit:
    """The usable records of one split (``train`` adds ``restval`` when configured), grouped by image.

    Reads ``config.data`` in its ``data.format`` (:mod:`vse_tf.data.datasets`) and screens
    the records (:mod:`vse_tf.data.screening`); what is skipped is counted in ``skips``,
    or, without it, summarised in printed lines that say where it was skipped: what the
    readers refused over the whole dataset (``<source>: reading skipped ...``), then the
    split's own screening (``test split: skipped ...``).
    """
    log = SkipLog() if skips is None else skips
    parts: dict[str, SkipLog] = {}
    data = load_splits(config, (split,), log, parts)[split]
    if skips is None:
        for label, part in (
            (f"{_source(config)}: reading (all splits)", parts["dataset"]),
            (f"{split} split", parts[split]),
        ):
            if part.skipped or part.repaired:
                print(part.summary(label), flush=True)
    return data
