"""Deciding how a run directory is resumed: same run or refused, finished or not, fresh start.

A restart resumes only the run it was: the backup records the config and the vocabulary
it trained with (:func:`run_fingerprint`); a finished run is compared with its
``config.json`` and ``vocabulary.txt``. Any difference is refused (:class:`RunMismatchError`)
unless the caller asks for a fresh start (:func:`clear_training_state`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

from vse_tf.config import ExperimentConfig, to_dict
from vse_tf.files import remove_stale_partials
from vse_tf.text.tokenizer import load_vocabulary
from vse_tf.training.run import CONFIG_FILE, VOCABULARY_FILE

# Where a run directory lives says nothing about the run it holds.
IGNORED_FIELDS = ("train.run_dir",)

SUMMARY_FILE = "training_summary.json"

HISTORY_FILE = "history.json"


class RunMismatchError(ValueError):
    """A restart whose config or vocabulary differs from the run it would resume."""


def vocabulary_digest(vocabulary: list[str] | tuple[str, ...]) -> str:
    """SHA-256 of the vocabulary, one word a line in order."""
    return hashlib.sha256("\n".join(vocabulary).encode("utf-8")).hexdigest()


def run_fingerprint(config: ExperimentConfig, vocabulary: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """What makes two processes the same run: the config (as JSON data) and the vocabulary's digest."""
    return {"config": to_dict(config), "vocabulary_sha256": vocabulary_digest(vocabulary)}


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``["train.learning_rate 0.01 -> nan", "vocabulary (other words)"]``: what differs, by field."""
    old, new = _flatten(saved.get("config", {})), _flatten(current["config"])
    differences = [
        f"{name} {old.get(name, '(absent)')!r} -> {new.get(name, '(absent)')!r}"
        for name in sorted(set(old) | set(new))
        if name not in IGNORED_FIELDS and not _same(old.get(name), new.get(name))
    ]
    if saved.get("vocabulary_sha256") != current["vocabulary_sha256"]:
        differences.append("vocabulary (other words or order)")
    return differences


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Raises :class:`RunMismatchError` (one line naming the differing fields) unless the runs match."""
    differences = fingerprint_differences(saved, current)
    if differences:
        raise RunMismatchError(
            f"{where} holds a run with a different config or vocabulary: {'; '.join(differences)}; "
            "pass --fresh (train(..., fresh=True)) to start over there, or choose another train.run_dir"
        )


def finished_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The fingerprint of a finished run in ``run_dir`` (its summary says finished), else None."""
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if not summary.get("finished"):
        return None
    vocabulary = load_vocabulary(run_dir / VOCABULARY_FILE)
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    return {"config": config, "vocabulary_sha256": vocabulary_digest(vocabulary)}


def clear_training_state(run_dir: Path, backup: Path, best: Path) -> None:
    """Removes what a fresh start must not resume: backup, best checkpoint (and copy), history, summary."""
    shutil.rmtree(backup.parent, ignore_errors=True)
    for path in (best, best.with_name(best.name + ".json"), run_dir / HISTORY_FILE, run_dir / SUMMARY_FILE):
        path.unlink(missing_ok=True)


def remove_partials(run_dir: Path, backup: Path, best: Path) -> list[Path]:
    """Removes the temporaries killed writers left in the run directory, backup and checkpoints."""
    return [path for folder in (run_dir, backup.parent, best.parent) for path in remove_stale_partials(folder)]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
