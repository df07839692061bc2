"""A run directory: its file layout, and restoring a trained run from it.

A run directory holds ``config.json``, ``vocabulary.txt``, ``checkpoints/best.weights.h5``
(best validation metric, with ``best.weights.h5.json``), ``backup/`` (the last finished epoch,
removed when training ends), ``logs/`` (TensorBoard), ``history.json``,
``training_summary.json``, ``skipped.json`` (input records skipped or repaired, by reason,
with their files) and, after evaluation, ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from vse_tf.config import ExperimentConfig
from vse_tf.files import write_text_atomic
from vse_tf.model.dual_encoder import DualEncoder, build_dual_encoder
from vse_tf.text.tokenizer import SentenceTokenizer, load_vocabulary
from vse_tf.text.towers import build_tokenizer
from vse_tf.text.wordpiece import WordPieceTokenizer

CONFIG_FILE = "config.json"


VOCABULARY_FILE = "vocabulary.txt"


BEST_WEIGHTS = Path("checkpoints") / "best.weights.h5"


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained (or restored) run: its config, tokenizer and model."""

    config: ExperimentConfig
    tokenizer: SentenceTokenizer | WordPieceTokenizer
    model: DualEncoder

    @property
    def run_dir(self) -> Path:
        return Path(self.config.train.run_dir)


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
    return Run(config, build_tokenizer(config.text, vocabulary), model)


def save_metrics(run: Run, metrics: dict[str, float], name: str = "metrics.json") -> Path:
    path = run.run_dir / name
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
