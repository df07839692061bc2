"""Encoding a split with a run's towers and scoring it (Recall@K, MAP), by protocol."""

from __future__ import annotations

import dataclasses

import numpy as np

from vse_tf.data.pipeline import eval_caption_batches, eval_image_batches
from vse_tf.data.records import RetrievalSplit
from vse_tf.data.splits import load_split
from vse_tf.evaluation.metrics import evaluate_map, evaluate_retrieval
from vse_tf.training.run import Run


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
