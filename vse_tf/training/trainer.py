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
from pathlib import Path

import keras
import numpy as np

from vse_tf.config import ExperimentConfig
from vse_tf.data.pipeline import (
    DecodeTracker,
    cache_decision,
    eval_caption_batches,
    eval_image_batches,
    training_dataset,
)
from vse_tf.data.records import RetrievalSplit
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_splits
from vse_tf.files import write_text_atomic
from vse_tf.model.distribution import make_strategy
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.model.siamese import TextVectors
from vse_tf.text.tokenizer import save_vocabulary
from vse_tf.text.towers import build_tokenizer, pretrained_variables, text_vocabulary
from vse_tf.text.word_graph import initialize_word_graph
from vse_tf.text.word_vectors import initialize_word_embedding
from vse_tf.training.callbacks import (
    BestCheckpoint,
    EpochBackup,
    HardestNegativeSchedule,
    RetrievalValidation,
    StopOnNaN,
)
from vse_tf.training.run import BEST_WEIGHTS, CONFIG_FILE, VOCABULARY_FILE, Run
from vse_tf.training.skip_report import DecodeFailureReport, report_skips


def train(config: ExperimentConfig, verbose: int = 1) -> Run:
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
    in_process_images = config.image.backbone != "features" and not config.data.service
    tracker = DecodeTracker(train_split.image_refs) if in_process_images and config.data.format != "tfrecord" else None
    if verbose:
        print(cache_decision(train_split, config)[1], flush=True)
    vocabulary = text_vocabulary(config.text, train_split.captions)
    config.save(run_dir / CONFIG_FILE)
    save_vocabulary(vocabulary, run_dir / VOCABULARY_FILE)

    tokenizer = build_tokenizer(config.text, vocabulary)
    strategy = make_strategy(config.train.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
        raise ValueError(f"train.batch_size={config.train.batch_size} must divide by the {replicas} replicas")
    steps_per_epoch = _steps_per_epoch(config, train_split)
    with strategy.scope():
        model = build_dual_encoder(config, vocabulary)
        optimizer = build_optimizer(config, steps_per_epoch, replicas, pretrained_variables(model.text_encoder))
        model.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
    if config.text.encoder == "graph":
        initialize_word_graph(model.text_encoder, tuple(train_split.captions), vocabulary)  # shards: streamed in
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
        verbose=2 if verbose >= 2 else 0,  # 1: only the validation callback's one line per epoch
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
