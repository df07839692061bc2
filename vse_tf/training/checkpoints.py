"""Weights and their record as one file, and the epoch commit built on it.

A ``.weights.h5`` file written here also holds a JSON record (dataset ``vse_tf_record`` at
the file's root, which Keras' loader ignores). Weights and record are written to one
temporary file and renamed together, so a kill leaves either the old pair or the new one.

The backup (``backup/latest.weights.h5``) is the commit point of an epoch: its record holds
the epochs finished, every epoch's logs (the history), the best monitored value and its
epoch, and the config and vocabulary it was trained with. The best checkpoint is written
after the backup, from the same weights; a kill between the two is repaired on resume
(:meth:`EpochCommit.repair_best`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from vse_tf.files import atomic_path

RECORD_DATASET = "vse_tf_record"

BACKUP_FILE = Path("backup") / "latest.weights.h5"


def save_weights_with_record(model: keras.Model, path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Writes ``model``'s weights (and optimizer state) with ``record`` inside, atomically."""
    with atomic_path(path) as temporary:
        model.save_weights(str(temporary))
        attach_record(temporary, record)


def attach_record(path: Path, record: dict[str, Any]) -> None:
    """Adds ``record`` (JSON) to the weights file at ``path`` (a temporary not yet renamed)."""
    with h5py.File(path, "a") as handle:
        handle.create_dataset(RECORD_DATASET, data=json.dumps(record))


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record inside the weights file at ``path``; None when there is no file or no record."""
    path = Path(path)
    if not path.exists():
        return None
    with h5py.File(path, "r") as handle:
        if RECORD_DATASET not in handle:
            return None
        return json.loads(handle[RECORD_DATASET][()].decode("utf-8"))


def weights_are_finite(model: keras.Model) -> bool:
    """True when every weight of ``model`` (not the optimizer's slots) is finite."""
    return all(bool(np.isfinite(np.asarray(weight)).all()) for weight in model.weights)


@dataclasses.dataclass(frozen=True)
class CommittedState:
    """What the backup records: the state of a run after its last committed epoch.

    Attributes:
        epoch: epochs finished, validated and best-checked (0 before the first commit).
        history: every committed epoch's logs, ``{name: [value per epoch]}`` (None for a
            non-finite value).
        best_value: the best monitored value so far (``-inf`` before any).
        best_epoch: the epoch (1-based) that reached it, 0 before any.
        fingerprint: the config and vocabulary the run trains with (see ``resume.run_fingerprint``).
    """

    epoch: int = 0
    history: dict[str, list[float | None]] = dataclasses.field(default_factory=dict)
    best_value: float = -math.inf
    best_epoch: int = 0
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"kind": "backup", **dataclasses.asdict(self), "best_value": _plain_number(self.best_value)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CommittedState:
        best = record["best_value"]
        return cls(
            epoch=int(record["epoch"]),
            history={key: list(values) for key, values in record["history"].items()},
            best_value=-math.inf if best is None else float(best),
            best_epoch=int(record["best_epoch"]),
            fingerprint=record["fingerprint"],
        )

    def after_epoch(self, epoch: int, logs: dict[str, Any], monitor: str) -> tuple[CommittedState, bool]:
        """The state once ``epoch`` (0-based) with ``logs`` is committed, and whether it is a new best."""
        history = {key: list(values) for key, values in self.history.items()}
        for key in sorted(set(history) | set(logs)):
            column = history.setdefault(key, [None] * self.epoch)
            column.append(_plain_number(logs[key]) if key in logs else None)
        value = logs.get(monitor)
        improved = value is not None and math.isfinite(float(value)) and float(value) > self.best_value
        return (
            dataclasses.replace(
                self,
                epoch=epoch + 1,
                history=history,
                best_value=float(value) if improved else self.best_value,
                best_epoch=epoch + 1 if improved else self.best_epoch,
            ),
            improved,
        )


def read_committed_state(backup: Path) -> CommittedState | None:
    """The state the backup at ``backup`` commits, or None when there is none."""
    record = read_record(backup)
    return None if record is None else CommittedState.from_record(record)


def _plain_number(value: Any) -> float | None:
    number = float(np.ravel(value)[0])
    return number if math.isfinite(number) else None
