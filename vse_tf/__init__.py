"""vse_tf: visual-semantic embeddings with Keras 3 on TensorFlow.

Two towers map images and sentences into one space; a ranking loss trains them with
``model.fit``; each tower exports as its own SavedModel for TF Serving.

The names a notebook needs are importable from here (``from vse_tf import train``); they
load on first use, so ``import vse_tf`` itself does not import TensorFlow.

The subpackages follow the data flow: ``data`` (readers, screening, tf.data) ->
``text`` / ``image`` (the towers) -> ``model`` (dual encoder, losses, distribution) ->
``training`` (``train()``, callbacks, run directories) -> ``evaluation`` (Recall@K, MAP,
applications) -> ``serving`` (SavedModel export, gallery indexes).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "ExperimentConfig": "vse_tf.config",
    "DataConfig": "vse_tf.config",
    "ImageTowerConfig": "vse_tf.config",
    "TextTowerConfig": "vse_tf.config",
    "LossConfig": "vse_tf.config",
    "TrainConfig": "vse_tf.config",
    "SiameseConfig": "vse_tf.config",
    "with_overrides": "vse_tf.config",
    "load_split": "vse_tf.data.splits",
    "build_image_tower": "vse_tf.image.towers",
    "build_text_tower": "vse_tf.text.towers",
    "SentenceTokenizer": "vse_tf.text.tokenizer",
    "DualEncoder": "vse_tf.model.dual_encoder",
    "build_dual_encoder": "vse_tf.model.dual_encoder",
    "triplet_ranking_loss": "vse_tf.model.losses",
    "pairwise_similarity_loss": "vse_tf.model.losses",
    "train": "vse_tf.training.trainer",
    "Run": "vse_tf.training.run",
    "restore_run": "vse_tf.training.run",
    "encode_split": "vse_tf.evaluation.encode",
    "evaluate_run": "vse_tf.evaluation.encode",
    "evaluate_retrieval": "vse_tf.evaluation.metrics",
    "format_recall_table": "vse_tf.evaluation.reports",
    "export_run": "vse_tf.serving.export",
    "export_towers": "vse_tf.serving.export",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'vse_tf' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
