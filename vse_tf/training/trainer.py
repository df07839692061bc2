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
import shutil
from pathlib import Path

import keras
import tensorflow as tf

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
from vse_tf.evaluation.encode import decodable_split
from vse_tf.files import write_text_atomic
from vse_tf.image.towers import backbone_variables
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
    EpochCommit,
    HardestNegativeSchedule,
    RetrievalValidation,
    StopOnNaN,
    SyncDataEpoch,
)
from vse_tf.training.checkpoints import BACKUP_FILE, CommittedState, read_committed_state
from vse_tf.training.resume import (
    HISTORY_FILE,
    SUMMARY_FILE,
    check_same_run,
    clear_training_state,
    finished_fingerprint,
    remove_partials,
    run_fingerprint,
)
from vse_tf.training.run import BEST_WEIGHTS, CONFIG_FILE, VOCABULARY_FILE, Run, restore_run
from vse_tf.training.skip_report import DecodeFailureReport, report_skips


def train(config: ExperimentConfig, verbose: int = 1, fresh: bool = False) -> Run:
    """Trains a DualEncoder with ``model.fit`` and keeps the best weights by validation rsum.

    Restarting with the same ``config`` resumes after the last epoch committed in
    ``<run_dir>/backup`` (a finished run is returned as it is); a restart whose config or
    vocabulary differs is refused (:class:`~vse_tf.training.resume.RunMismatchError`)
    unless ``fresh``, which discards the run directory's training state first. Returns the
    run with the best weights loaded.

    Raises:
        FloatingPointError: the loss (or the weights) became non-finite; the best checkpoint
            and the backup keep the last good epoch.
        RunMismatchError: see above.
    """
    run_dir = Path(config.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.train.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.train.seed)
    skips = SkipLog()
    splits = load_splits(config, ("train", "val"), skips)
    train_split = splits["train"]
    val_split = validation_split(splits["val"], config, skips)
    report_skips(skips, run_dir, verbose=verbose > 0)
    vocabulary = text_vocabulary(config.text, train_split.captions)
    state = committed_state(config, vocabulary, fresh)
    if state is None:
        if verbose:
            print(f"training finished already: {run_dir} (pass --fresh to train it again)", flush=True)
        return restore_run(run_dir)
    in_process_images = config.image.backbone != "features" and not config.data.service
    tracker = DecodeTracker(train_split.image_refs) if in_process_images and config.data.format != "tfrecord" else None
    if verbose:
        print(cache_decision(train_split, config)[1], flush=True)
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
        optimizer = build_optimizer(
            config,
            steps_per_epoch,
            replicas,
            pretrained_variables(model.text_encoder),
            backbone_variables(model.image_encoder),
        )
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
    commit = EpochCommit(run_dir / BACKUP_FILE, BestCheckpoint(run_dir / BEST_WEIGHTS, config.train.monitor), state)
    if state.epoch:
        restore_backup(model, strategy, commit, verbose=verbose > 0)
    stop_on_nan = StopOnNaN()
    data_epoch = tf.Variable(state.epoch, dtype=tf.int64, trainable=False, name="data_epoch")
    callbacks = [
        SyncDataEpoch(data_epoch),
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
    ]
    if tracker is not None:
        callbacks.append(DecodeFailureReport(tracker, train_split, skips, run_dir, verbose=verbose > 0))
    callbacks.append(commit)  # last: it reads the validation logs
    if state.epoch < config.train.epochs:
        model.fit(
            training_dataset(train_split, tokenizer, config, text_vectors, tracker=tracker, epoch=data_epoch),
            epochs=config.train.epochs,
            initial_epoch=state.epoch,
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles itself
            verbose=2 if verbose >= 2 else 0,  # 1: only the validation callback's one line per epoch
        )
    summary = {
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "steps_per_epoch": steps_per_epoch,
        "epochs": config.train.epochs,
        "epochs_committed": commit.state.epoch,
        "resumed_from_epoch": state.epoch,
        "replicas": replicas,
        "stopped": stop_on_nan.message,
        "finished": not stop_on_nan.message,
    }
    finish_run(run_dir, commit, summary)
    if stop_on_nan.message:
        raise FloatingPointError(stop_on_nan.message)
    model.load_weights(str(run_dir / BEST_WEIGHTS))
    return Run(config, tokenizer, model)


def committed_state(config: ExperimentConfig, vocabulary, fresh: bool) -> CommittedState | None:
    """The state to resume (``epoch == 0`` for a new run), or None when the run has finished.

    Removes stale temporaries first; with ``fresh``, the whole training state.

    Raises:
        RunMismatchError: the backup or the finished run has another config or vocabulary.
    """
    run_dir = Path(config.train.run_dir)
    fingerprint = run_fingerprint(config, vocabulary)
    if fresh:
        clear_training_state(run_dir, run_dir / BACKUP_FILE, run_dir / BEST_WEIGHTS)
    remove_partials(run_dir, run_dir / BACKUP_FILE, run_dir / BEST_WEIGHTS)
    state = read_committed_state(run_dir / BACKUP_FILE)
    if state is not None:
        check_same_run(state.fingerprint, fingerprint, run_dir)
        return state
    finished = finished_fingerprint(run_dir)
    if finished is not None:
        check_same_run(finished, fingerprint, run_dir)
        return None
    return CommittedState(fingerprint=fingerprint)


def restore_backup(model: keras.Model, strategy: tf.distribute.Strategy, commit: EpochCommit, verbose: bool) -> None:
    """Loads the backup's weights and optimizer state into ``model``; repairs a cut-off best checkpoint."""
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(str(commit.path))
    if verbose:
        print(f"resuming from the backup after epoch {commit.state.epoch}: {commit.path}", flush=True)
    if commit.repair_best(model) and verbose:
        print(f"best checkpoint rewritten from the backup (epoch {commit.state.epoch})", flush=True)


def finish_run(run_dir: Path, commit: EpochCommit, summary: dict) -> None:
    """Writes ``history.json`` (every committed epoch) and ``training_summary.json``; a finished
    run then loses its backup, last, once the best checkpoint and the summary are on disk."""
    write_text_atomic(run_dir / HISTORY_FILE, json.dumps(commit.state.history, indent=2) + "\n")
    if summary["finished"] and not commit.best.path.exists():
        raise FileNotFoundError(
            f"{commit.best.path}: no epoch reached a finite {commit.best.monitor}; the backup {commit.path} is kept"
        )
    write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    if summary["finished"]:
        remove_backup(commit.path)


def remove_backup(backup: Path) -> None:
    """Removes the backup folder of a finished run."""
    shutil.rmtree(backup.parent, ignore_errors=True)


def validation_split(split: RetrievalSplit, config: ExperimentConfig, skips: SkipLog) -> RetrievalSplit:
    """The first ``train.validation_max_images`` of ``split`` that TensorFlow decodes.

    Validation decodes its images every epoch: one the screening passed but TensorFlow
    refuses would end every epoch, so it leaves once here, counted in ``skips`` by file.
    Shards were screened and decoded when they were written.
    """
    split = split.head(config.train.validation_max_images)
    return split if config.data.format == "tfrecord" else decodable_split(split, config, skips)


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
