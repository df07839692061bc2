"""Library entry points behind ``train.fit`` and ``export.export``: train, evaluate, export a run.

A run directory holds ``config.json``, ``vocabulary.txt``, ``checkpoints/best.weights.h5``
(best validation rsum, with ``best.weights.h5.json``), ``backup/`` (the last finished epoch,
removed when training ends), ``logs/`` (TensorBoard), ``history.json``,
``training_summary.json``, ``skipped.json`` (input records skipped or repaired, by reason,
with their files) and, after evaluation, ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vse_tf.callbacks import BestCheckpoint, EpochBackup, HardestNegativeSchedule, RetrievalValidation, StopOnNaN
from vse_tf.config import ExperimentConfig, write_text_atomic
from vse_tf.data.records import RetrievalSplit
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_splits
from vse_tf.evaluation import evaluate_map, evaluate_retrieval
from vse_tf.graph_text import initialize_word_graph
from vse_tf.model import DualEncoder, build_dual_encoder, build_optimizer
from vse_tf.pipeline import (
    DecodeTracker,
    cache_decision,
    eval_caption_batches,
    eval_image_batches,
    training_dataset,
)
from vse_tf.serving import export_towers
from vse_tf.siamese import TextVectors
from vse_tf.skip_report import DecodeFailureReport, report_skips
from vse_tf.text import SentenceTokenizer, build_vocabulary, load_vocabulary, save_vocabulary
from vse_tf.word_vectors import initialize_word_embedding

CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.txt"
BEST_WEIGHTS = Path("checkpoints") / "best.weights.h5"


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained (or restored) run: its config, tokenizer and model."""

    config: ExperimentConfig
    tokenizer: SentenceTokenizer
    model: DualEncoder

    @property
    def run_dir(self) -> Path:
        return Path(self.config.train.run_dir)


def load_split(config: ExperimentConfig, split: str, skips: SkipLog | None = None) -> RetrievalSplit:
    """The usable records of one split (``train`` adds ``restval`` when configured), grouped by image.

    Reads ``config.data`` in its ``data.format`` (:mod:`vse_tf.data.datasets`) and screens
    the records (:mod:`vse_tf.data.screening`); what is skipped is counted in ``skips``,
    or, without it, summarised in one printed line.
    """
    log = SkipLog() if skips is None else skips
    data = load_splits(config, (split,), log)[split]
    if skips is None and (log.skipped or log.repaired):
        print(log.summary(f"{split} split"), flush=True)
    return data


def train(config: ExperimentConfig, verbose: int = 2) -> Run:
    """Trains a DualEncoder with ``model.fit`` and keeps the best weights by validation rsum.

    Restarting with the same ``config`` resumes from the last epoch backed up in
    ``<run_dir>/backup``. Returns the run with the best weights loaded.
    """
    run_dir = Path(config.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.train.seed)
    skips = SkipLog()
    splits = load_splits(config, ("train", "val"), skips)
    report_skips(skips, run_dir, verbose=verbose > 0)
    train_split = splits["train"]
    val_split = splits["val"].head(config.train.validation_max_images)
    tracker = None if config.image.backbone == "features" else DecodeTracker(train_split.image_refs)
    if verbose:
        print(cache_decision(train_split, config)[1], flush=True)
    vocabulary = build_vocabulary(train_split.captions, config.text.min_word_count)
    config.save(run_dir / CONFIG_FILE)
    save_vocabulary(vocabulary, run_dir / VOCABULARY_FILE)

    tokenizer = SentenceTokenizer(vocabulary, config.text.max_length)
    strategy = make_strategy(config.train.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
        raise ValueError(f"train.batch_size={config.train.batch_size} must divide by the {replicas} replicas")
    steps_per_epoch = _steps_per_epoch(config, train_split)
    with strategy.scope():
        model = build_dual_encoder(config, vocabulary)
        model.compile(
            optimizer=build_optimizer(config, steps_per_epoch, replicas), jit_compile=config.train.jit_compile
        )
    if config.text.encoder == "graph":
        initialize_word_graph(model.text_encoder, train_split.captions, vocabulary)
    text_vectors = fine_grained_text_vectors(config, train_split)
    if config.text.word_vectors:
        coverage = initialize_word_embedding(
            model.text_encoder,
            vocabulary,
            config.text.word_vectors,
            config.text.word_vectors_format,
            config.text.freeze_word_vectors,
        )
        print(coverage.describe(), flush=True)
        write_text_atomic(run_dir / "word_vectors.json", json.dumps(dataclasses.asdict(coverage), indent=2) + "\n")
    stop_on_nan = StopOnNaN()
    backup = EpochBackup(run_dir / "backup", steps_per_epoch, verbose=verbose > 0)
    callbacks = [
        backup,
        HardestNegativeSchedule(config.loss.max_violation, config.loss.warmup_epochs),
        stop_on_nan,
        RetrievalValidation(
            eval_image_batches(val_split, "val", config),
            eval_caption_batches(val_split, tokenizer),
            val_split.caption_to_image,
            verbose=verbose > 0,
            categories=validation_categories(config, val_split),
        ),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), update_freq="epoch"),
        BestCheckpoint(run_dir / BEST_WEIGHTS, monitor=config.train.monitor),
    ]
    if tracker is not None:
        callbacks.append(DecodeFailureReport(tracker, train_split, skips, run_dir, verbose=verbose > 0))
    history = model.fit(
        training_dataset(train_split, tokenizer, config, text_vectors, tracker=tracker),
        epochs=config.train.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=verbose,
    )
    write_text_atomic(run_dir / "history.json", json.dumps(_plain(history.history), indent=2) + "\n")
    summary = {
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "steps_per_epoch": steps_per_epoch,
        "epochs": config.train.epochs,
        "resumed_from_epoch": backup.resumed_from_epoch,
        "replicas": replicas,
        "stopped": stop_on_nan.message,
    }
    write_text_atomic(run_dir / "training_summary.json", json.dumps(summary, indent=2) + "\n")
    if stop_on_nan.message:
        raise FloatingPointError(stop_on_nan.message)
    model.load_weights(str(run_dir / BEST_WEIGHTS))
    return Run(config, tokenizer, model)


def validation_categories(config: ExperimentConfig, val_split: RetrievalSplit) -> tuple[str, ...] | None:
    """The validation images' categories when every one has one (MAP is then logged), else None.

    Raises:
        ValueError: ``train.monitor == "val_mean_map"`` and some validation image has no category.
    """
    if all(val_split.categories):
        return val_split.categories
    if config.train.monitor == "val_mean_map":
        raise ValueError("train.monitor='val_mean_map' needs a category for every validation image")
    return None


def fine_grained_text_vectors(config: ExperimentConfig, train_split: RetrievalSplit) -> TextVectors | None:
    """The siamese text vectors for ``loss.kind == "finegrained"`` (checked to cover every training text)."""
    if config.loss.kind != "finegrained":
        return None
    if not config.loss.text_vectors:
        raise ValueError("loss.kind='finegrained' needs loss.text_vectors (written by `python -m train.siamese`)")
    text_vectors = TextVectors.load(config.loss.text_vectors)
    text_vectors.check_covers(train_split.captions, config.loss.text_vectors)
    return text_vectors


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, else CPU) or ``multiworker`` (TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def restore_run(run_dir: str | os.PathLike) -> Run:
    """Rebuilds a run's model from its directory and loads its best weights."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: no config; is {run_dir} a training run directory?")
    config = ExperimentConfig.load(config_path)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, run_dir=str(run_dir)))
    vocabulary = load_vocabulary(run_dir / VOCABULARY_FILE)
    model = build_dual_encoder(config, vocabulary)
    weights = run_dir / BEST_WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: no checkpoint; did training finish an epoch?")
    model.load_weights(str(weights))
    return Run(config, SentenceTokenizer(vocabulary, config.text.max_length), model)


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """A split's embeddings: each distinct image once, every caption once."""

    split: RetrievalSplit
    image_embeddings: np.ndarray
    caption_embeddings: np.ndarray


PROTOCOL_FOLDS = {"full": 1, "coco5k": 1, "coco1k": 5}


def encode_split(run: Run, split: str = "test") -> EncodedSplit:
    """Runs both towers over a split; each distinct image is encoded once."""
    data = load_split(run.config, split)
    image_embeddings = run.model.image_encoder.predict(eval_image_batches(data, split, run.config), verbose=0)
    caption_embeddings = run.model.text_encoder.predict(eval_caption_batches(data, run.tokenizer), verbose=0)
    return EncodedSplit(data, image_embeddings, caption_embeddings)


def evaluate_run(
    run: Run, split: str = "test", protocol: str = "full", map_at: int | None = None, progress: bool = False
) -> dict[str, float]:
    """Recall@K of the run's model on a split, plus category MAP when every image has one.

    Args:
        run: a trained or restored run.
        split: ``train``, ``val`` or ``test``.
        protocol: ``full`` / ``coco5k``: the whole split; ``coco1k``: five consecutive
            folds of the split's images, metrics averaged (COCO 1K on the 5K test split).
        map_at: also report MAP@R for this R (captions inherit their image's category).
        progress: print evaluation progress to stderr.
    """
    return evaluate_encoded(encode_split(run, split), protocol, map_at, progress)


def evaluate_encoded(
    encoded: EncodedSplit, protocol: str = "full", map_at: int | None = None, progress: bool = False
) -> dict[str, float]:
    """:func:`evaluate_run` on embeddings already computed."""
    if protocol not in PROTOCOL_FOLDS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOL_FOLDS)}, got {protocol!r}")
    data = encoded.split
    metrics = evaluate_retrieval(
        encoded.image_embeddings,
        encoded.caption_embeddings,
        data.caption_to_image,
        folds=PROTOCOL_FOLDS[protocol],
        progress=progress,
    )
    if all(data.categories):
        caption_categories = [data.categories[image] for image in data.caption_to_image]
        metrics.update(
            evaluate_map(
                encoded.image_embeddings, encoded.caption_embeddings, data.categories, caption_categories, map_at
            )
        )
    return metrics


def save_metrics(run: Run, metrics: dict[str, float], name: str = "metrics.json") -> Path:
    path = run.run_dir / name
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def export_run(run: Run, models_dir: str | os.PathLike, version: int = 1) -> dict[str, Path]:
    """Exports the run's two towers as SavedModels (see :func:`vse_tf.serving.export_towers`)."""
    return export_towers(
        run.model.image_encoder, run.model.text_encoder, run.tokenizer, run.config, models_dir, version
    )


def _steps_per_epoch(config: ExperimentConfig, split: RetrievalSplit) -> int:
    pairs = split.num_images if config.train.sampling == "image" else split.num_captions
    steps = pairs // config.train.batch_size
    if steps == 0:
        raise ValueError(
            f"train.batch_size={config.train.batch_size} exceeds the {pairs} training pairs: no full batch"
        )
    return steps


def _plain(history: dict) -> dict:
    return {
        key: [float(value) if math.isfinite(float(value)) else None for value in np.ravel(values)]
        for key, values in history.items()
    }
