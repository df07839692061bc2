"""Search and annotation with exported towers: gallery indexes, top-k, a retrieval SavedModel.

An index is a folder: ``embeddings.npy`` (``float32 [N, D]`` unit rows), ``ids.json``
(image paths relative to the gallery folder, or caption texts) and ``index.json`` (kind,
the SavedModel that embedded it, skipped inputs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.config import write_text_atomic
from vse_tf.data.common import IMAGE_SUFFIXES
from vse_tf.progress import Progress
from vse_tf.serving import IMAGE_ENCODER_NAME, TEXT_ENCODER_NAME, ServingModel, write_serving_model

INDEX_KINDS = ("images", "captions")
RETRIEVAL_NAME = "retrieval"


@dataclasses.dataclass(frozen=True)
class EmbeddingIndex:
    """Gallery embeddings and their ids.

    Attributes:
        kind: ``images`` (ids are file paths) or ``captions`` (ids are the sentences).
        ids: one id per row.
        embeddings: ``float32 [N, D]`` unit rows.
        model: the SavedModel version directory that embedded the gallery.
        skipped: inputs that could not be embedded, with the reason.
    """

    kind: str
    ids: tuple[str, ...]
    embeddings: np.ndarray
    model: str
    skipped: tuple[tuple[str, str], ...] = ()

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes the index folder (files replaced atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".embeddings.{os.getpid()}.npy"
        np.save(temporary, self.embeddings.astype(np.float32))
        os.replace(temporary, directory / "embeddings.npy")
        write_text_atomic(directory / "ids.json", json.dumps(list(self.ids), ensure_ascii=False))
        meta = {
            "kind": self.kind,
            "count": len(self.ids),
            "dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
            "model": self.model,
            "skipped": [list(item) for item in self.skipped],
        }
        write_text_atomic(directory / "index.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EmbeddingIndex:
        """Reads an index folder written by :meth:`save`."""
        directory = Path(directory)
        meta_path = directory / "index.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: not an index folder (no index.json)")
        meta = json.loads(meta_path.read_text())
        ids = tuple(json.loads((directory / "ids.json").read_text()))
        embeddings = np.load(directory / "embeddings.npy")
        if meta.get("kind") not in INDEX_KINDS:
            raise ValueError(f"{meta_path}: field 'kind' must be one of {INDEX_KINDS}, got {meta.get('kind')!r}")
        if embeddings.shape[0] != len(ids):
            raise ValueError(f"{directory}: {embeddings.shape[0]} embeddings but {len(ids)} ids")
        skipped = tuple(tuple(item) for item in meta.get("skipped", []))
        return cls(meta["kind"], ids, embeddings, meta.get("model", ""), skipped)


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Image files below ``directory`` (by suffix), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a folder")
    return sorted(path for path in directory.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def build_image_index(
    model_path: str | os.PathLike, image_dir: str | os.PathLike, batch_size: int = 32, progress: bool = True
) -> EmbeddingIndex:
    """Embeds every image below ``image_dir`` once with an exported image encoder.

    A batch the model rejects is retried image by image; images it still rejects (not
    an image, truncated, too large) are skipped and listed in ``skipped``.
    """
    serve = tf.saved_model.load(str(model_path)).signatures["serving_default"]
    paths = list_images(image_dir)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    tracker = Progress(len(paths), "embedding images", progress, unit="images")
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        for path, embedding, error in _embed_files(serve, batch):
            relative = str(path.relative_to(image_dir))
            if error:
                skipped.append((relative, error))
            else:
                ids.append(relative)
                rows.append(embedding)
        tracker.update(start + len(batch))
    embeddings = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    return EmbeddingIndex("images", tuple(ids), embeddings, str(model_path), tuple(skipped))


def _embed_files(serve, paths: Sequence[Path]):
    """Yields ``(path, embedding or None, error or "")``."""
    encoded = [path.read_bytes() for path in paths]
    try:
        embeddings = serve(images=tf.constant(encoded, dtype=tf.string))["embeddings"].numpy()
        yield from ((path, row, "") for path, row in zip(paths, embeddings))
        return
    except tf.errors.InvalidArgumentError:
        pass
    for path, data in zip(paths, encoded):
        try:
            yield path, serve(images=tf.constant([data], dtype=tf.string))["embeddings"].numpy()[0], ""
        except tf.errors.InvalidArgumentError as error:
            yield path, None, error_reason(error)


def error_reason(error: tf.errors.OpError) -> str:
    """The informative line of a TF runtime error (graph errors bury it under a header)."""
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    for line in lines:
        if "vse_tf:" in line:
            return line[line.index("vse_tf:") :].rstrip("]")[:200]
    useful = [line for line in lines if not line.startswith(("Graph execution error", "Detected at", "<stack", "[["))]
    return (useful or lines or ["unknown error"])[0][:200]


def build_caption_index(
    model_path: str | os.PathLike, captions: Sequence[str], batch_size: int = 256, progress: bool = True
) -> EmbeddingIndex:
    """Embeds captions (de-duplicated, order kept) with an exported text encoder."""
    unique = list(dict.fromkeys(captions))
    serve = tf.saved_model.load(str(model_path)).signatures["serving_default"]
    rows = []
    tracker = Progress(len(unique), "embedding captions", progress, unit="captions")
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        rows.append(serve(sentences=tf.constant(batch))["embeddings"].numpy())
        tracker.update(start + len(batch))
    embeddings = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    return EmbeddingIndex("captions", tuple(unique), embeddings, str(model_path))


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by dot product.

    Args:
        queries: ``[Q, D]``.
        gallery: ``[N, D]``.
        k: results per query (at most N).

    Returns:
        ``(indices [Q, k], scores [Q, k])``, best first.
    """
    k = min(k, gallery.shape[0])
    scores = np.asarray(queries, np.float32) @ np.asarray(gallery, np.float32).T
    if k == 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), np.float32)
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.argsort(-candidate_scores, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(candidate_scores, order, axis=1)


def sibling_model(model_path: str | os.PathLike, name: str) -> Path:
    """``MODELS/image_encoder/3`` -> ``MODELS/<name>/3``: the other tower of the same export."""
    model_path = Path(model_path)
    return model_path.parent.parent / name / model_path.name


def text_model_for(index: EmbeddingIndex) -> Path:
    """The text encoder exported with the image encoder that built an image index."""
    return sibling_model(index.model, TEXT_ENCODER_NAME)


def image_model_for(index: EmbeddingIndex) -> Path:
    """The image encoder exported with the text encoder that built a caption index."""
    return sibling_model(index.model, IMAGE_ENCODER_NAME)


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
