"""Callbacks: validation Recall@K, the hardest-negative schedule, atomic checkpoints and backups, NaN stop."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vse_tf.evaluation.metrics import evaluate_map, evaluate_retrieval
from vse_tf.files import atomic_path, write_text_atomic
from vse_tf.model._keras_compat import set_initial_epoch


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


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    """Writes ``model``'s weights beside ``path`` and renames: a kill never leaves half a file."""
    with atomic_path(path) as temporary:
        model.save_weights(str(temporary))


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the highest ``monitor`` (validation rsum).

    The file is replaced atomically; the best value so far is stored beside it, so a
    resumed run only replaces the checkpoint with a better epoch.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_rsum"):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.record = self.path.with_name(self.path.name + ".json")

    def _best_so_far(self) -> float:
        if self.record.exists() and self.path.exists():
            return float(json.loads(self.record.read_text())["value"])
        return -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value <= self._best_so_far():
            return
        save_weights_atomic(self.model, self.path)
        write_text_atomic(self.record, json.dumps({"monitor": self.monitor, "value": value, "epoch": epoch + 1}))


class EpochBackup(keras.callbacks.Callback):
    """Backs up weights and optimizer state at every epoch end; resumes a killed run.

    Not ``keras.callbacks.BackupAndRestore``: that writes its weights and its epoch record as
    two files, so a kill between the two writes resumes from a record that disagrees with
    the weights.

    One file holds everything, replaced atomically; the epoch to resume from is derived
    from the optimizer's step counter inside it, so there is no second file to disagree
    with. A run killed mid-epoch restarts that epoch from its beginning and ends with the
    same number of optimizer steps as an uninterrupted run. The backup is removed when
    training ends normally.
    """

    def __init__(self, backup_dir: str | os.PathLike, steps_per_epoch: int, verbose: bool = True):
        super().__init__()
        self.path = Path(backup_dir) / "latest.weights.h5"
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.resumed_from_epoch = 0

    def on_train_begin(self, logs=None):
        if not self.path.exists():
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(self.path))
        self.resumed_from_epoch = int(self.model.optimizer.iterations.numpy()) // self.steps_per_epoch
        set_initial_epoch(self.model, self.resumed_from_epoch)
        if self.verbose:
            print(f"resuming from the backup after epoch {self.resumed_from_epoch}: {self.path}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return
        save_weights_atomic(self.model, self.path)

    def on_train_end(self, logs=None):
        if not self.model.stop_training and self.path.exists():
            shutil.rmtree(self.path.parent, ignore_errors=True)


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and says where it happened."""

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
