"""The retrieval SavedModel: a query encoder, a gallery index and top-k in one graph.

The gallery is searched by brute force (an exact index) or through the IVF graph of core
ops (an ``ivf`` index; ``nprobe`` and ``k`` become request inputs of the ``*_tuned``
signatures). faiss indexes are searched offline and are refused here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.serving.export import write_serving_model
from vse_tf.serving.index import EmbeddingIndex, image_model_for, text_model_for
from vse_tf.serving.index_store import SearchIndex, ivf_search_module, ivf_signatures, read_ivf_state
from vse_tf.serving.ivf import IvfParams
from vse_tf.serving.signatures import ServingModel

RETRIEVAL_NAME = "retrieval"


def _ranked(queries: tf.Tensor, gallery: tf.Variable, ids: tf.Variable, k: int) -> dict[str, tf.Tensor]:
    scores = tf.matmul(queries, gallery, transpose_b=True)
    best = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(gallery)[0]))
    return {"ids": tf.gather(ids, best.indices), "scores": best.values}


def _ranking_function(module: tf.Module, role: str, encoder_path, input_name: str, index, k: int) -> dict:
    """Adds an encoder and a gallery index to ``module`` under ``role``; returns its signatures.

    ``role`` is ``search`` (sentences against images) or ``annotate`` (images against
    captions); ``input_name`` is the encoder's ``serving_default`` input. An exact index
    gives ``{role}``; an ivf index also ``{role}_tuned`` (``nprobe``, ``k`` inputs).
    """
    encoder = tf.saved_model.load(str(encoder_path))
    setattr(module, f"{role}_encoder", encoder)

    def embed(queries):
        return encoder.signatures["serving_default"](**{input_name: queries})["embeddings"]

    if isinstance(index, SearchIndex) and index.backend == "ivf":
        settings = IvfParams.from_dict({**index.params, "k": k})
        state = read_ivf_state(index.directory, index.gallery)
        ivf = ivf_search_module(index.gallery, state["centroids"], state["lists"], settings.quantize)
        setattr(module, f"{role}_ivf", ivf)
        signatures = ivf_signatures(ivf, index.dim, input_name, embed, settings)
        return {role: signatures["serving_default"], f"{role}_tuned": signatures["search"]}
    if isinstance(index, SearchIndex) and index.backend != "exact":
        raise ValueError(f"{index.directory}: a {index.backend} index is searched offline; export an exact or ivf one")
    gallery_index = index.gallery if isinstance(index, SearchIndex) else index
    gallery = tf.Variable(gallery_index.embeddings, trainable=False, name=f"{role}_gallery")
    ids = tf.Variable(list(gallery_index.ids), trainable=False, name=f"{role}_ids", dtype=tf.string)
    setattr(module, f"{role}_gallery", gallery)
    setattr(module, f"{role}_ids", ids)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=input_name)])
    def rank(queries):
        return _ranked(embed(queries), gallery, ids, k)

    setattr(module, role, rank)
    return {role: rank}


def _gallery_of(index) -> EmbeddingIndex:
    return index.gallery if isinstance(index, SearchIndex) else index


def export_retrieval_model(
    out_dir: str | os.PathLike,
    version: int = 1,
    k: int = 10,
    image_index: EmbeddingIndex | SearchIndex | None = None,
    text_model: str | os.PathLike | None = None,
    caption_index: EmbeddingIndex | SearchIndex | None = None,
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
        text_model = text_model or text_model_for(_gallery_of(image_index))
        signatures.update(_ranking_function(module, "search", text_model, "sentences", image_index, k))
        sentences = np.array(["a small red circle left of a big blue star"], dtype=object)
        warmup["search"] = {"sentences": sentences}
        if "search_tuned" in signatures:
            warmup["search_tuned"] = {"sentences": sentences, "nprobe": np.int32(1), "k": np.int32(k)}
        described.append(
            f"search: sentences -> top-{k} of {len(_gallery_of(image_index).ids)} gallery images (ids, scores)"
            f"{_how(image_index)}"
        )
    if caption_index is not None:
        image_model = image_model or image_model_for(_gallery_of(caption_index))
        signatures.update(_ranking_function(module, "annotate", image_model, "images", caption_index, k))
        sample = np.array([tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8))).numpy()], dtype=object)
        warmup["annotate"] = {"images": sample}
        if "annotate_tuned" in signatures:
            warmup["annotate_tuned"] = {"images": sample, "nprobe": np.int32(1), "k": np.int32(k)}
        described.append(
            f"annotate: image bytes -> top-{k} of {len(_gallery_of(caption_index).ids)} captions (ids, scores)"
            f"{_how(caption_index)}"
        )
    first = "search" if "search" in signatures else "annotate"
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
        limits=_limits(k, image_index, caption_index),
        description="; ".join(described) + ". Scores are dot products of unit vectors, best first.",
    )
    write_serving_model(model, target, version, extras={})
    return target


def _how(index) -> str:
    if isinstance(index, SearchIndex) and index.backend == "ivf":
        return (
            f" through an IVF index (nprobe {index.params['nprobe']} by default; the _tuned signature takes "
            "nprobe and k)"
        )
    return " by brute force"


def _limits(k: int, *indexes) -> dict[str, int]:
    limits = {"k": k}
    for index in indexes:
        if isinstance(index, SearchIndex) and index.backend == "ivf":
            limits["nprobe"] = int(index.params["nprobe"])
    return limits
