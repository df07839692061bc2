"""Callbacks: validation Recall@K, the hardest-negative schedule, the epoch commit (backup, best), NaN stop."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vse_tf.evaluation.metrics import evaluate_map, evaluate_retrieval
from vse_tf.files import write_text_atomic
from vse_tf.training.checkpoints import CommittedState, read_record, save_weights_with_record, weights_are_finite


class RetrievalValidation(keras.callbacks.Callback):
    """Adds ``val_i2t_r1`` ... ``val_rsum`` to the epoch logs.

    Put it before TensorBoard and ModelCheckpoint in the callback list: they read the
    same logs, so the metrics reach TensorBoard and ``monitor="val_rsum"`` works.

    Args:
        images: batches for the image tower (each distinct image once).
        captions: batches of token ids for the text tower.
        caption_to_image: ``[M]`` image row of each caption.
        verbose: print one line of the metrics each epoch.
        categories: optional ``[N]`` category of each image: also logs ``val_i2t_map``,
            ``val_t2i_map`` and ``val_mean_map`` (captions take their image's category).
    """

    def __init__(
        self,
        images: tf.data.Dataset,
        captions: tf.data.Dataset,
        caption_to_image,
        verbose: bool = True,
        categories=None,
    ):
        super().__init__()
        self.images = images
        self.captions = captions
        self.caption_to_image = np.asarray(caption_to_image)
        self.verbose = verbose
        self.categories = None if categories is None else np.asarray(categories)
        self._epoch_started = time.perf_counter()
        self._epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "stop_training", False):  # an epoch cut short (StopOnNaN): nothing to validate
            return
        image_embeddings = self.model.image_encoder.predict(self.images, verbose=0)
        caption_embeddings = self.model.text_encoder.predict(self.captions, verbose=0)
        metrics = evaluate_retrieval(image_embeddings, caption_embeddings, self.caption_to_image)
        if self.categories is not None:
            metrics.update(
                evaluate_map(
                    image_embeddings,
                    caption_embeddings,
                    self.categories,
                    self.categories[self.caption_to_image],
                )
            )
        if logs is not None:
            logs.update({f"val_{key}": value for key, value in metrics.items()})
        self._epoch_seconds.append(time.perf_counter() - self._epoch_started)
        if self.verbose:
            print(self._epoch_line(epoch, metrics, (logs or {}).get("loss")), flush=True)

    def _epoch_line(self, epoch: int, metrics: dict[str, float], loss) -> str:
        """``epoch 3/12  loss 4.21  val R@1 i2t 41.0 t2i 35.2  R@10 .../...  rsum 390.1  9.8s, ~88s left``."""
        epochs = int((self.params or {}).get("epochs") or epoch + 1)
        left = float(np.mean(self._epoch_seconds)) * (epochs - epoch - 1)
        parts = [f"epoch {epoch + 1}/{epochs}"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"val R@1 i2t {metrics['i2t_r1']:.1f} t2i {metrics['t2i_r1']:.1f}")
        parts.append(f"R@10 i2t {metrics['i2t_r10']:.1f} t2i {metrics['t2i_r10']:.1f}")
        parts.append(f"rsum {metrics['rsum']:.1f}")
        if "i2t_map" in metrics:
            parts.append(f"MAP i2t/t2i {metrics['i2t_map']:.3f}/{metrics['t2i_map']:.3f}")
        parts.append(f"{self._epoch_seconds[-1]:.1f}s, ~{left:.0f}s left")
        return "  ".join(parts)


class HardestNegativeSchedule(keras.callbacks.Callback):
    """Sum of hinges for ``warmup_epochs``, then max violation (if enabled).

    The switch is derived from the epoch number, so a run resumed by BackupAndRestore
    lands on the same loss.
    """

    def __init__(self, max_violation: bool, warmup_epochs: int):
        super().__init__()
        self.max_violation = max_violation
        self.warmup_epochs = warmup_epochs

    def on_epoch_begin(self, epoch, logs=None):
        active = self.max_violation and epoch >= self.warmup_epochs
        self.model.max_violation.assign(1.0 if active else 0.0)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the highest ``monitor`` (validation rsum).

    The weights and their record (monitor, value, epoch) are one file, replaced
    atomically (see :mod:`vse_tf.training.checkpoints`); ``<name>.json`` beside it is a
    copy of the record for people. Used alone, the best value so far is read from the file,
    so a resumed run only replaces the checkpoint with a better epoch; inside ``train()``,
    :class:`EpochCommit` decides and calls :meth:`save`. An epoch cut short (a non-finite
    loss) is never saved.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_rsum"):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.record = self.path.with_name(self.path.name + ".json")

    def saved(self) -> dict | None:
        """The record inside the checkpoint, or None when there is no checkpoint."""
        return read_record(self.path)

    def save(self, model: keras.Model, value: float, epoch: int) -> None:
        """Writes ``model``'s weights as the best, reached at ``epoch`` (1-based) with ``value``."""
        record = {"monitor": self.monitor, "value": float(value), "epoch": int(epoch)}
        save_weights_with_record(model, self.path, record)
        self.write_copy(record)

    def write_copy(self, record: dict) -> None:
        """Writes ``<name>.json``, the human-readable copy of the checkpoint's record."""
        write_text_atomic(self.record, json.dumps(record))

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "stop_training", False):
            return
        value = (logs or {}).get(self.monitor)
        saved = self.saved()
        best = -math.inf if saved is None else float(saved["value"])
        if value is None or not math.isfinite(value) or value <= best:
            return
        self.save(self.model, value, epoch + 1)


class EpochCommit(keras.callbacks.Callback):
    """Commits each finished epoch: backup first, then the best checkpoint.

    Put it last: it reads the validation logs. At an epoch's end it writes the backup
    (weights, optimizer state and :class:`~vse_tf.training.checkpoints.CommittedState`
    in one file, renamed into place: the commit), then, when the epoch is a new best,
    the best checkpoint from the same weights. A kill before the rename redoes the epoch;
    a kill after it finds the epoch recorded, and :meth:`repair_best` rewrites a best
    checkpoint the kill cut off. An epoch cut short (``stop_training`` set by
    :class:`StopOnNaN`) is not committed.

    Not ``keras.callbacks.BackupAndRestore``: that writes weights and epoch as two files,
    and with ``save_freq=N`` (Keras 3.15) it records the batch but restores only the epoch,
    so the restored weights train on that epoch's first batches twice.
    """

    def __init__(self, backup: str | os.PathLike, best: BestCheckpoint, state: CommittedState):
        super().__init__()
        self.path = Path(backup)
        self.best = best
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "stop_training", False):
            return
        state, improved = self.state.after_epoch(epoch, logs or {}, self.best.monitor)
        save_weights_with_record(self.model, self.path, state.to_record())
        self.state = state
        if improved:
            self.best.save(self.model, state.best_value, state.epoch)

    def repair_best(self, model: keras.Model) -> bool:
        """Rewrites what a kill after the last commit cut off; ``model`` holds the backup's weights.

        The best checkpoint, when the last committed epoch is the best and the checkpoint is
        older; its ``.json`` copy, when it disagrees with the checkpoint. Returns whether the
        checkpoint was rewritten.
        """
        saved = self.best.saved()
        if self.state.epoch and self.state.best_epoch == self.state.epoch:
            if saved is None or int(saved["epoch"]) != self.state.epoch:
                self.best.save(model, self.state.best_value, self.state.epoch)
                return True
        if saved is not None and (not self.best.record.exists() or json.loads(self.best.record.read_text()) != saved):
            self.best.write_copy(saved)
        return False


class SyncDataEpoch(keras.callbacks.Callback):
    """Sets the training pipeline's epoch variable at each epoch's start.

    The pipeline derives the epoch's order from it (``training_dataset(epoch=...)``), so
    a resumed run's epoch ``e`` sees the batches of the uninterrupted run's epoch ``e``.
    """

    def __init__(self, epoch: tf.Variable):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and says where it happened.

    Also at an epoch's end whose weights are not all finite. Put it before the callbacks
    that validate and checkpoint: they skip an epoch that ``stop_training`` cut short.
    """

    def __init__(self):
        super().__init__()
        self.message = ""
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = int(self.model.optimizer.iterations.numpy())
        self.message = (
            f"training stopped: the loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1} "
            f"(optimizer step {step}); the best checkpoint so far is kept"
        )
        print(self.message, flush=True)
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "stop_training", False) or weights_are_finite(self.model):
            return
        step = int(self.model.optimizer.iterations.numpy())
        self.message = (
            f"training stopped: the weights became non-finite in epoch {epoch + 1} (optimizer step {step}); "
            "the best checkpoint so far is kept"
        )
        print(self.message, flush=True)
        self.model.stop_training = True
