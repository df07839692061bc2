"""The retrieval SavedModel: a query encoder, a gallery and top-k in one graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.serving.export import write_serving_model
from vse_tf.serving.index import EmbeddingIndex, image_model_for, text_model_for
from vse_tf.serving.signatures import ServingModel

RETRIEVAL_NAME = "retrieval"


def _ranked(queries: tf.Tensor, gallery: tf.Variable, ids: tf.Variable, k: int) -> dict[str, tf.Tensor]:
    scores = tf.matmul(queries, gallery, transpose_b=True)
    best = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(gallery)[0]))
    return {"ids": tf.gather(ids, best.indices), "scores": best.values}


def _ranking_function(module: tf.Module, role: str, encoder_path, input_name: str, index: EmbeddingIndex, k: int):
    """Adds an encoder and a gallery to ``module`` under ``role``; returns query -> top-k.

    ``role`` is ``search`` (sentences against images) or ``annotate`` (images against
    captions); ``input_name`` is the encoder's ``serving_default`` input.
    """
    encoder = tf.saved_model.load(str(encoder_path))
    gallery = tf.Variable(index.embeddings, trainable=False, name=f"{role}_gallery")
    ids = tf.Variable(list(index.ids), trainable=False, name=f"{role}_ids", dtype=tf.string)
    setattr(module, f"{role}_encoder", encoder)
    setattr(module, f"{role}_gallery", gallery)
    setattr(module, f"{role}_ids", ids)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=input_name)])
    def rank(queries):
        embeddings = encoder.signatures["serving_default"](**{input_name: queries})["embeddings"]
        return _ranked(embeddings, gallery, ids, k)

    setattr(module, role, rank)
    return rank


def export_retrieval_model(
    out_dir: str | os.PathLike,
    version: int = 1,
    k: int = 10,
    image_index: EmbeddingIndex | None = None,
    text_model: str | os.PathLike | None = None,
    caption_index: EmbeddingIndex | None = None,
    image_model: str | os.PathLike | None = None,
) -> Path:
    """Writes ``out_dir/retrieval/<version>/``: encoder + gallery + brute-force top-k in one graph.

    Signatures: ``search`` (``sentences`` -> the top-k image ids and scores of
    ``image_index``) when an image index is given, ``annotate`` (``images`` -> the top-k
    captions of ``caption_index``) when a caption index is given; ``serving_default`` is
    ``search`` if present, else ``annotate``. Encoders default to the siblings of the
    models that built the indexes.
    """
    if image_index is None and caption_index is None:
        raise ValueError("export_retrieval_model needs an image index, a caption index, or both")
    module = tf.Module()
    signatures, warmup, described = {}, {}, []
    if image_index is not None:
        text_model = text_model or text_model_for(image_index)
        signatures["search"] = _ranking_function(module, "search", text_model, "sentences", image_index, k)
        warmup["search"] = {"sentences": np.array(["a small red circle left of a big blue star"], dtype=object)}
        described.append(f"search: sentences -> top-{k} of {len(image_index.ids)} gallery images (ids, scores)")
    if caption_index is not None:
        image_model = image_model or image_model_for(caption_index)
        signatures["annotate"] = _ranking_function(module, "annotate", image_model, "images", caption_index, k)
        sample = tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8))).numpy()
        warmup["annotate"] = {"images": np.array([sample], dtype=object)}
        described.append(f"annotate: image bytes -> top-{k} of {len(caption_index.ids)} captions (ids, scores)")
    first = next(iter(signatures))
    signatures["serving_default"] = signatures[first]
    warmup["serving_default"] = warmup[first]
    target = Path(out_dir) / RETRIEVAL_NAME / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists already; pick another --version")
    model = ServingModel(
        name=RETRIEVAL_NAME,
        tracked=(module,),
        signatures=signatures,
        warmup_inputs=warmup,
        limits={"k": k},
        description="; ".join(described) + ". Scores are dot products of unit vectors, best first.",
    )
    write_serving_model(model, target, version, extras={})
    return target
