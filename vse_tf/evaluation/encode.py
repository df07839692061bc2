"""Encoding a split with a run's towers and scoring it (Recall@K, MAP), by protocol.

The safety net: an image that passed screening but that TensorFlow cannot decode is left
out together with its captions (so every caption still points at its own image), named
and counted as ``decode_failed``; it never ends an evaluation.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.data.pipeline import AUTOTUNE, as_model_image, decode_and_resize, eval_caption_batches, eval_image_batches
from vse_tf.data.records import RetrievalSplit
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_split
from vse_tf.evaluation.metrics import evaluate_map, evaluate_retrieval
from vse_tf.text.tokenizer import SentenceTokenizer, text_coverage
from vse_tf.training.run import Run


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """A split's embeddings: each distinct image once, every caption once."""

    split: RetrievalSplit
    image_embeddings: np.ndarray
    caption_embeddings: np.ndarray


PROTOCOL_FOLDS = {"full": 1, "coco5k": 1, "coco1k": 5}


def encode_split(run: Run, split: str = "test", skips: SkipLog | None = None) -> EncodedSplit:
    """Runs both towers over a split; each distinct image is encoded once.

    Images TensorFlow cannot decode are left out with their captions and counted in
    ``skips`` (``decode_failed``, by file); without ``skips`` one line says so. One line
    says how many of the captions' words the vocabulary holds (the rest read as ``[UNK]``).
    """
    data = load_split(run.config, split)
    log = SkipLog() if skips is None else skips
    image_embeddings, data = encode_images(run.model.image_encoder, data, split, run.config, log)
    if skips is None and log.skipped:
        print(log.summary(f"{split} split, decoding"), flush=True)
    if isinstance(run.tokenizer, SentenceTokenizer):  # WordPiece has no out-of-vocabulary words to count
        print(text_coverage(run.tokenizer.vocabulary, data.captions).describe(f"{split} text"), flush=True)
    caption_embeddings = run.model.text_encoder.predict(eval_caption_batches(data, run.tokenizer), verbose=0)
    return EncodedSplit(data, image_embeddings, caption_embeddings)


def encode_images(
    image_encoder: keras.Model,
    split: RetrievalSplit,
    split_name: str,
    config: ExperimentConfig,
    skips: SkipLog,
    batch_size: int = 256,
) -> tuple[np.ndarray, RetrievalSplit]:
    """``float32 [N', D]`` embeddings of the split's decodable images, and the split they fit.

    ``N'`` is the number of images TensorFlow decodes; the others leave the split with
    their captions and are counted in ``skips`` as ``decode_failed`` with the decoder's
    message. Precomputed features are used as they are.
    """
    if config.image.backbone == "features":
        return image_encoder.predict(eval_image_batches(split, split_name, config, batch_size), verbose=0), split
    rows, embeddings = [], []
    for pixels, positions in _decoded_images(split, config.image.image_size, batch_size):
        embeddings.append(np.asarray(image_encoder.predict_on_batch(as_model_image(pixels))))
        rows.append(positions.numpy())
    decoded = np.concatenate(rows) if rows else np.zeros([0], np.int64)
    failed = _count_failures(split, decoded.tolist(), skips)
    if not embeddings:
        raise ValueError(f"split {split_name!r}: no image could be decoded (e.g. {split.image_refs[0]})")
    return np.concatenate(embeddings)[np.argsort(decoded, kind="stable")], split.without_images(failed)


def decodable_split(
    split: RetrievalSplit, config: ExperimentConfig, skips: SkipLog, batch_size: int = 256
) -> RetrievalSplit:
    """The split less the images TensorFlow cannot decode (counted as in :func:`encode_images`);
    for a validation split decoded again every epoch."""
    if config.image.backbone == "features":
        return split
    decoded = set()
    for _pixels, positions in _decoded_images(split, config.image.image_size, batch_size):
        decoded.update(positions.numpy().tolist())
    failed = _count_failures(split, decoded, skips)
    return split.without_images(failed)


def _decoded_images(split: RetrievalSplit, image_size: int, batch_size: int) -> tf.data.Dataset:
    """Batches ``(uint8 [B, S, S, 3], int64 [B] row in the split)``; undecodable images are dropped."""
    elements = tf.data.Dataset.from_tensor_slices((list(split.image_refs), tf.range(split.num_images, dtype=tf.int64)))
    decoded = elements.map(
        lambda path, position: (decode_and_resize(tf.io.read_file(path), image_size), position),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    return decoded.batch(batch_size).prefetch(AUTOTUNE)


def _count_failures(split: RetrievalSplit, decoded, skips: SkipLog) -> list[int]:
    """The rows missing from ``decoded``, each counted with its captions and the decoder's message."""
    failed = sorted(set(range(split.num_images)) - set(decoded))
    for position in failed:
        path = split.image_refs[position]
        captions = sum(1 for image in split.caption_to_image if image == position)
        skips.skip("decode_failed", f"{path}: {_decode_error(path)}", captions)
    return failed


def _decode_error(path: str) -> str:
    """TensorFlow's first line of complaint about one file."""
    try:
        decode_and_resize(tf.io.read_file(path), 8)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error))
        return message.splitlines()[0] if message else type(error).__name__
    return "decoding failed in the pipeline"


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
