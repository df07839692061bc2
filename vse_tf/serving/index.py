"""Search and annotation with exported towers: the gallery, embedding it, brute-force top-k.

A gallery is stored as ``embeddings.npy`` (``float32 [N, D]`` unit rows), ``ids.json``
(image paths relative to the gallery folder, or caption texts) and ``index.json`` (kind,
the SavedModel that embedded it, skipped inputs, and the backend that indexes it) in an
index version directory ``INDEX/<version>/`` (see :mod:`vse_tf.serving.index_store`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.data.image_facts import IMAGE_SUFFIXES
from vse_tf.files import atomic_path, write_text_atomic
from vse_tf.progress import progress_bar
from vse_tf.serving.signatures import IMAGE_ENCODER_NAME, TEXT_ENCODER_NAME

INDEX_KINDS = ("images", "captions")
INDEX_FILE = "index.json"
IDS_FILE = "ids.json"
EMBEDDINGS_FILE = "embeddings.npy"


class IndexFolderError(ValueError):
    """An index folder whose files are missing, unreadable or disagree; the message names the file."""


def version_numbers(root: str | os.PathLike) -> list[int]:
    """The version directories under an index folder, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(path.name) for path in root.iterdir() if path.name.isdigit() and path.is_dir())


def resolve_version(path: str | os.PathLike) -> Path:
    """A version directory: ``path`` itself when it holds ``index.json``, else its newest version."""
    path = Path(path)
    if (path / INDEX_FILE).exists():
        return path
    versions = version_numbers(path)
    if not versions:
        raise FileNotFoundError(f"{path}: not an index folder (no {INDEX_FILE} and no version directories)")
    return path / str(versions[-1])


def read_index_meta(directory: Path) -> dict:
    """``index.json`` of a version directory, as a dict."""
    path = directory / INDEX_FILE
    meta = _read_json(path, FileNotFoundError(f"{path}: not an index folder (no {INDEX_FILE})"))
    if not isinstance(meta, dict):
        raise IndexFolderError(f"{path}: must hold a JSON object")
    return meta


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

    def save(self, directory: str | os.PathLike, extra_meta: dict | None = None) -> Path:
        """Writes the gallery files into ``directory`` (each replaced atomically).

        ``extra_meta`` adds fields to ``index.json`` (the backend, its settings, the version).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / EMBEDDINGS_FILE) as temporary:
            np.save(temporary, self.embeddings.astype(np.float32))
        write_text_atomic(directory / IDS_FILE, json.dumps(list(self.ids), ensure_ascii=False))
        meta = {
            "kind": self.kind,
            "count": len(self.ids),
            "dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
            "model": self.model,
            "skipped": [list(item) for item in self.skipped],
            **(extra_meta or {}),
        }
        write_text_atomic(directory / INDEX_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EmbeddingIndex:
        """Reads the gallery of an index version (``directory`` or its newest version) and checks it.

        Raises:
            FileNotFoundError: not an index folder.
            IndexFolderError: a missing or unreadable file, or files that disagree (the
                message names the file).
        """
        directory = resolve_version(directory)
        meta = read_index_meta(directory)
        meta_path = directory / INDEX_FILE
        if meta.get("kind") not in INDEX_KINDS:
            raise IndexFolderError(f"{meta_path}: field 'kind' must be one of {INDEX_KINDS}, got {meta.get('kind')!r}")
        ids = _read_ids(directory / IDS_FILE)
        embeddings = _read_embeddings(directory / EMBEDDINGS_FILE)
        if embeddings.shape[0] != len(ids):
            raise IndexFolderError(
                f"{directory / EMBEDDINGS_FILE}: {embeddings.shape[0]} rows but {IDS_FILE} holds {len(ids)} ids"
            )
        if "dim" in meta and len(ids) and embeddings.shape[1] != meta["dim"]:
            raise IndexFolderError(
                f"{directory / EMBEDDINGS_FILE}: rows of dim {embeddings.shape[1]}, {INDEX_FILE} says dim {meta['dim']}"
            )
        if "count" in meta and meta["count"] != len(ids):
            raise IndexFolderError(f"{directory / IDS_FILE}: {len(ids)} ids, {INDEX_FILE} says count {meta['count']}")
        if len(set(ids)) != len(ids):
            raise IndexFolderError(f"{directory / IDS_FILE}: ids repeat")
        skipped = tuple(tuple(item) for item in meta.get("skipped", []))
        return cls(meta["kind"], ids, embeddings, meta.get("model", ""), skipped)


def _read_json(path: Path, missing: Exception):
    """A JSON file's content; ``missing`` if there is none, IndexFolderError if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFolderError(f"{path}: not valid JSON ({error})") from None


def _read_ids(path: Path) -> tuple[str, ...]:
    ids = _read_json(path, IndexFolderError(f"{path}: missing"))
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise IndexFolderError(f"{path}: must be a JSON list of strings")
    return tuple(ids)


def _read_embeddings(path: Path) -> np.ndarray:
    try:
        embeddings = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFolderError(f"{path}: missing") from None
    except (OSError, ValueError) as error:
        raise IndexFolderError(f"{path}: not a NumPy array file ({error})") from None
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise IndexFolderError(f"{path}: must be float32 [N, D], got {embeddings.dtype} {embeddings.shape}")
    return embeddings


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
    with progress_bar(len(paths), "embedding images", "images", progress) as update:
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            for path, embedding, error in _embed_files(serve, batch):
                relative = str(path.relative_to(image_dir))
                if error:
                    skipped.append((relative, error))
                else:
                    ids.append(relative)
                    rows.append(embedding)
            update(start + len(batch))
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
    with progress_bar(len(unique), "embedding captions", "captions", progress) as update:
        for start in range(0, len(unique), batch_size):
            batch = unique[start : start + batch_size]
            rows.append(serve(sentences=tf.constant(batch))["embeddings"].numpy())
            update(start + len(batch))
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
