"""Index folders with versions: one backend per folder, a new version directory per change.

``INDEX/<version>/`` holds, for every backend, the gallery (``index.json``: kind, backend
and its settings, count, dim, the model that embedded it, skipped inputs; ``ids.json``;
``embeddings.npy``, ``float32 [N, D]`` unit rows, the reference and the source of
updates) and the backend's own files:

- ``exact``: nothing more; brute force.
- ``ivf``: ``ivf.npz`` (centroids, the list of each row) and a SavedModel
  (``saved_model.pb``, ``variables/``, ``assets.extra/``) that stock TF Serving serves.
- ``faiss-ivf``, ``faiss-ivfpq``, ``faiss-hnsw``: ``faiss.index``, ``labels.npy`` (the
  faiss label of each row) and ``tombstones.npy``; searched offline with faiss.

A version is written under a temporary name and renamed when complete; an existing
version is never overwritten, so the one being served stays as it is. Adding or removing
items writes the next version without retraining (the IVF centroids and faiss quantisers
are kept).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf.files import atomic_path
from vse_tf.serving import faiss_index
from vse_tf.serving.faiss_index import FAISS_BACKENDS, FaissParams
from vse_tf.serving.index import (
    IDS_FILE,
    INDEX_FILE,
    EmbeddingIndex,
    IndexFolderError,
    read_index_meta,
    resolve_version,
    top_k,
    version_numbers,
)
from vse_tf.serving.ivf import (
    IvfParams,
    IvfSearch,
    assign_to_lists,
    build_layout,
    default_nlist,
    train_coarse_quantizer,
)

BACKENDS = ("exact", "ivf", *FAISS_BACKENDS)
IVF_FILE = "ivf.npz"
FAISS_FILE = "faiss.index"
LABELS_FILE = "labels.npy"
TOMBSTONES_FILE = "tombstones.npy"
IVF_MODEL_NAME = "ivf_index"


def default_params(backend: str) -> dict:
    """The settings a backend is built with when none are given."""
    if backend == "ivf":
        return IvfParams().to_dict()
    if backend in FAISS_BACKENDS:
        return FaissParams().to_dict()
    if backend == "exact":
        return {}
    raise ValueError(f"unknown index backend {backend!r}; expected one of {BACKENDS}")


@dataclasses.dataclass(frozen=True)
class SearchIndex:
    """A loaded index version: the gallery plus its backend.

    Attributes:
        gallery: ids, embeddings and provenance.
        backend: one of :data:`BACKENDS`.
        params: the backend's settings (``IvfParams`` / ``FaissParams`` as a dict).
        directory: the version directory.
        engine: the loaded SavedModel (``ivf``) or faiss index; None for ``exact``.
        labels: ``int64 [N]`` faiss label per row (faiss backends).
        tombstones: labels still in a faiss index that cannot delete them.
    """

    gallery: EmbeddingIndex
    backend: str
    params: dict
    directory: Path
    engine: object = None
    labels: np.ndarray | None = None
    tombstones: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.gallery.embeddings.shape[1])

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[list[list[str]], np.ndarray]:
        """Top-``k`` ids per query, best first.

        Args:
            queries: ``float32 [Q, D]`` unit rows.
            k: results per query.
            nprobe: lists probed (``ivf``, ``faiss-ivf*``) or the HNSW beam; default from the index.

        Returns:
            ``(ids, scores float32 [Q, k])``; where fewer than ``k`` items were reached the
            row ends in ``""`` ids with score ``-inf``.
        """
        queries = np.asarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"{self.directory}: queries have shape {queries.shape}, the index has dim {self.dim}")
        if self.backend == "exact":
            rows, scores = top_k(queries, self.gallery.embeddings, k)
            return self._pad([[self.gallery.ids[row] for row in line] for line in rows], scores, k)
        if self.backend == "ivf":
            probes = nprobe or self.params["nprobe"]
            result = self.engine.signatures["search"](
                embeddings=tf.constant(queries), nprobe=tf.constant(probes, tf.int32), k=tf.constant(k, tf.int32)
            )
            ids = [[value.decode("utf-8") for value in line] for line in result["ids"].numpy()]
            return ids, result["scores"].numpy()
        labels, scores = faiss_index.search(
            self.engine,
            queries,
            k,
            nprobe or self.params["nprobe"],
            nprobe or self.params["ef_search"],
            self.tombstones,
        )
        row_of = dict(zip(self.labels.tolist(), range(len(self.labels))))
        ids = [[self.gallery.ids[row_of[label]] if label in row_of else "" for label in row] for row in labels.tolist()]
        return ids, np.where(labels >= 0, scores, -np.inf).astype(np.float32)

    def serving_bytes(self) -> int:
        """Memory of what a search reads: the float32 matrix (exact), the SavedModel's
        variables less its ids (ivf), or the serialised faiss index (codes, faiss's int64
        ids, quantisers, graph). Ids as strings are left out for every backend."""
        if self.backend == "exact":
            return int(self.gallery.embeddings.nbytes)
        if self.backend == "ivf":
            arrays = (self.engine.centroids, self.engine.offsets, self.engine.vectors, self.engine.scales)
            return sum(int(array.numpy().nbytes) for array in arrays)
        return faiss_index.index_bytes(self.engine)

    @staticmethod
    def _pad(ids: list[list[str]], scores: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        missing = k - scores.shape[1]
        if missing <= 0:
            return ids, scores
        padded = np.concatenate([scores, np.full((len(scores), missing), -np.inf, np.float32)], axis=1)
        return [line + [""] * missing for line in ids], padded


def write_index(
    root: str | os.PathLike,
    gallery: EmbeddingIndex,
    backend: str = "exact",
    params: dict | None = None,
    version: int | None = None,
) -> Path:
    """Builds ``backend`` over ``gallery`` and writes ``root/<version>/`` (default: the next one).

    Raises:
        FileExistsError: the version exists already.
        ValueError: an unknown backend or setting.
    """
    params = {**default_params(backend), **(params or {})}
    embeddings = np.asarray(gallery.embeddings, np.float32)
    if backend == "ivf":
        settings = IvfParams.from_dict(params)
        nlist = min(len(embeddings), settings.nlist or default_nlist(len(embeddings)))
        centroids = train_coarse_quantizer(embeddings, nlist, settings.seed)
        state = {"centroids": centroids, "lists": assign_to_lists(embeddings, centroids)}
    elif backend in FAISS_BACKENDS:
        labels = np.arange(len(embeddings), dtype=np.int64)
        engine = faiss_index.build_faiss_index(backend, embeddings, labels, FaissParams.from_dict(params))
        state = {"engine": engine, "labels": labels, "tombstones": np.zeros(0, np.int64)}
    else:
        default_params(backend)
        state = {}
    return _write_version(root, gallery, backend, params, state, version)


def _write_version(root, gallery: EmbeddingIndex, backend: str, params: dict, state: dict, version) -> Path:
    root = Path(root)
    if (root / INDEX_FILE).exists():
        raise FileExistsError(f"{root} is a version directory already; give its parent index folder")
    version = version or (max(version_numbers(root), default=0) + 1)
    target = root / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists already; an index version is never overwritten")
    with atomic_path(target) as temporary:
        if backend == "ivf":
            _write_ivf_saved_model(temporary, version, gallery, params, state)
        temporary.mkdir(parents=True, exist_ok=True)
        gallery.save(temporary, extra_meta={"backend": backend, "params": params, "version": version})
        if backend == "ivf":
            np.savez(temporary / IVF_FILE, centroids=state["centroids"], lists=state["lists"])
        elif backend in FAISS_BACKENDS:
            faiss_index.write_faiss(state["engine"], temporary / FAISS_FILE)
            np.save(temporary / LABELS_FILE, state["labels"])
            np.save(temporary / TOMBSTONES_FILE, state["tombstones"])
    return target


def ivf_search_module(gallery: EmbeddingIndex, centroids: np.ndarray, lists: np.ndarray, quantize: str) -> IvfSearch:
    """The IVF graph's module over a gallery whose rows are already assigned to lists."""
    layout = build_layout(gallery.embeddings, centroids, lists, quantize)
    return IvfSearch(layout, [gallery.ids[row] for row in layout.rows])


def _write_ivf_saved_model(directory: Path, version: int, gallery: EmbeddingIndex, params: dict, state: dict) -> None:
    from vse_tf.serving.export import write_serving_model
    from vse_tf.serving.signatures import ServingModel

    settings = IvfParams.from_dict(params)
    module = ivf_search_module(gallery, state["centroids"], state["lists"], settings.quantize)
    dim = int(gallery.embeddings.shape[1])
    signatures = ivf_signatures(module, dim, "embeddings", None, settings)
    module.search, module.search_defaults = signatures["search"], signatures["serving_default"]
    sample = np.zeros((1, dim), np.float32)
    sample[0, 0] = 1.0
    warmup = {
        "serving_default": {"embeddings": sample},
        "search": {"embeddings": sample, "nprobe": np.int32(settings.nprobe), "k": np.int32(settings.k)},
    }
    model = ServingModel(
        name=IVF_MODEL_NAME,
        tracked=(module,),
        signatures=signatures,
        warmup_inputs=warmup,
        limits={"nlist": int(len(state["centroids"])), "nprobe": settings.nprobe, "k": settings.k},
        description=(
            f"IVF index of {len(gallery.ids)} {gallery.kind} (dim {dim}, {len(state['centroids'])} lists, "
            f"{'int8 rows, one float32 scale per dimension' if settings.quantize == 'int8' else 'float32 rows'}). "
            "`search`: embeddings float32 [B, D] unit rows, nprobe int32 [], k int32 [] -> ids string [B, k], "
            f"scores float32 [B, k]; `serving_default`: embeddings only, nprobe={settings.nprobe}, k={settings.k}. "
            "Scores are dot products, best first; '' ids with score -inf where the probed lists hold fewer than k."
        ),
    )
    write_serving_model(model, directory, version, extras={})


def ivf_signatures(module: IvfSearch, dim: int, input_name: str, encoder, settings: IvfParams) -> dict:
    """``search`` (queries, nprobe, k) and ``serving_default`` (queries; the defaults).

    ``encoder`` maps the ``input_name`` tensor to query embeddings; None takes embeddings
    ``float32 [None, dim]`` directly.
    """
    if encoder is None:
        spec = tf.TensorSpec([None, dim], tf.float32, name=input_name)
    else:
        spec = tf.TensorSpec([None], tf.string, name=input_name)

    def embed(queries):
        return queries if encoder is None else encoder(queries)

    @tf.function(
        input_signature=[spec, tf.TensorSpec([], tf.int32, name="nprobe"), tf.TensorSpec([], tf.int32, name="k")]
    )
    def search(queries, nprobe, k):
        return module.rank(embed(queries), nprobe, k)

    @tf.function(input_signature=[spec])
    def search_defaults(queries):
        return module.rank(embed(queries), tf.constant(settings.nprobe), tf.constant(settings.k))

    return {"search": search, "serving_default": search_defaults}


def load_index(path: str | os.PathLike) -> SearchIndex:
    """Loads and checks an index version (``path`` or its newest version).

    Raises:
        IndexFolderError: a missing or inconsistent file, named in the message.
    """
    directory = resolve_version(path)
    gallery = EmbeddingIndex.load(directory)
    meta = read_index_meta(directory)
    backend = meta.get("backend", "exact")
    if backend not in BACKENDS:
        raise IndexFolderError(f"{directory / INDEX_FILE}: field 'backend' must be one of {BACKENDS}, got {backend!r}")
    params = {**default_params(backend), **meta.get("params", {})}
    if backend == "ivf":
        read_ivf_state(directory, gallery)
        saved_model = directory / "saved_model.pb"
        if not saved_model.exists():
            raise IndexFolderError(f"{saved_model}: missing (an ivf index version is a SavedModel)")
        return SearchIndex(gallery, backend, params, directory, engine=tf.saved_model.load(str(directory)))
    if backend in FAISS_BACKENDS:
        engine, labels, tombstones = _load_faiss_state(directory, gallery)
        faiss_index.set_refine_factor(engine, params["refine_factor"])
        return SearchIndex(gallery, backend, params, directory, engine, labels, tombstones)
    return SearchIndex(gallery, backend, params, directory)


def read_ivf_state(directory: Path, gallery: EmbeddingIndex) -> dict:
    """``{"centroids": float32 [nlist, D], "lists": int32 [N]}`` of an ivf version, checked against its gallery."""
    state = _read_npz(directory / IVF_FILE)
    centroids, lists = state.get("centroids"), state.get("lists")
    if centroids is None or lists is None:
        raise IndexFolderError(f"{directory / IVF_FILE}: needs arrays 'centroids' and 'lists'")
    if centroids.ndim != 2 or centroids.shape[1] != gallery.embeddings.shape[1]:
        raise IndexFolderError(
            f"{directory / IVF_FILE}: centroids have shape {centroids.shape}, the embeddings dim "
            f"{gallery.embeddings.shape[1]}"
        )
    if len(lists) != len(gallery.ids) or (len(lists) and (lists.min() < 0 or lists.max() >= len(centroids))):
        raise IndexFolderError(
            f"{directory / IVF_FILE}: 'lists' must give one list in 0..{len(centroids) - 1} for each of the "
            f"{len(gallery.ids)} ids, got {len(lists)} entries"
        )
    return state


def _read_npz(path: Path) -> dict:
    if not path.exists():
        raise IndexFolderError(f"{path}: missing")
    try:
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise IndexFolderError(f"{path}: not readable ({error})") from error


def _load_faiss_state(directory: Path, gallery: EmbeddingIndex):
    for name in (FAISS_FILE, LABELS_FILE, TOMBSTONES_FILE):
        if not (directory / name).exists():
            raise IndexFolderError(f"{directory / name}: missing")
    try:
        engine = faiss_index.read_faiss(directory / FAISS_FILE)
    except RuntimeError as error:
        raise IndexFolderError(f"{directory / FAISS_FILE}: not a faiss index ({str(error).splitlines()[0]})") from None
    labels = np.load(directory / LABELS_FILE)
    tombstones = np.load(directory / TOMBSTONES_FILE)
    if engine.d != gallery.embeddings.shape[1]:
        raise IndexFolderError(
            f"{directory / FAISS_FILE}: faiss index of dim {engine.d}, the embeddings dim {gallery.embeddings.shape[1]}"
        )
    if len(labels) != len(gallery.ids):
        raise IndexFolderError(f"{directory / LABELS_FILE}: {len(labels)} labels but {len(gallery.ids)} ids")
    if engine.ntotal != len(labels) + len(tombstones):
        raise IndexFolderError(
            f"{directory / FAISS_FILE}: holds {engine.ntotal} items, {LABELS_FILE} and {TOMBSTONES_FILE} "
            f"account for {len(labels) + len(tombstones)}"
        )
    return engine, labels, tombstones


def update_index(path: str | os.PathLike, added: EmbeddingIndex | None = None, removed: Sequence[str] = ()) -> Path:
    """Writes the next version of an index folder with items added and/or removed by id.

    An added id that is present already replaces that item. No retraining: new IVF rows
    go to their nearest existing centroid; faiss adds to its trained index and deletes
    (IVF) or tombstones (HNSW, re-ranked IVF-PQ) removed labels.

    Args:
        path: the index folder (its newest version is the base) or a version directory.
        added: items to add, embedded by the same model (same kind and dim).
        removed: ids to remove; an id not in the index is an error.

    Returns:
        The new version directory.
    """
    current = load_index(path)
    root = current.directory.parent
    gallery = current.gallery
    if added is not None:
        _check_compatible(current, added)
    missing = sorted(set(removed) - set(gallery.ids))
    if missing:
        raise KeyError(f"{current.directory / IDS_FILE}: no such ids to remove: {missing[:5]}")
    replaced = set(removed) | (set(added.ids) & set(gallery.ids) if added is not None else set())
    keep = np.array([item not in replaced for item in gallery.ids], bool)
    new_ids = tuple(item for item, kept in zip(gallery.ids, keep) if kept)
    new_rows = [gallery.embeddings[keep]]
    if added is not None and len(added.ids):
        new_ids += tuple(added.ids)
        new_rows.append(np.asarray(added.embeddings, np.float32))
    updated = dataclasses.replace(gallery, ids=new_ids, embeddings=np.concatenate(new_rows, axis=0))
    state = _updated_state(current, keep, added)
    version = int(current.directory.name) + 1 if current.directory.name.isdigit() else None
    return _write_version(root, updated, current.backend, current.params, state, version)


def _check_compatible(current: SearchIndex, added: EmbeddingIndex) -> None:
    if added.kind != current.gallery.kind:
        raise ValueError(f"{current.directory}: indexes {current.gallery.kind}, cannot add {added.kind}")
    if len(added.ids) and added.embeddings.shape[1] != current.dim:
        raise ValueError(f"{current.directory}: dim {current.dim}, added items of dim {added.embeddings.shape[1]}")
    if len(set(added.ids)) != len(added.ids):
        raise ValueError("the added items repeat an id")


def _updated_state(current: SearchIndex, keep: np.ndarray, added: EmbeddingIndex | None) -> dict:
    new_embeddings = np.asarray(added.embeddings, np.float32) if added is not None and len(added.ids) else None
    if current.backend == "ivf":
        state = read_ivf_state(current.directory, current.gallery)
        lists = [state["lists"][keep]]
        if new_embeddings is not None:
            lists.append(assign_to_lists(new_embeddings, state["centroids"]))
        return {"centroids": state["centroids"], "lists": np.concatenate(lists)}
    if current.backend in FAISS_BACKENDS:
        engine, labels, tombstones = _load_faiss_state(current.directory, current.gallery)
        gone = labels[~keep]
        if len(gone) and not faiss_index.remove_items(engine, gone):
            tombstones = np.concatenate([tombstones, gone])
        labels = labels[keep]
        if new_embeddings is not None:
            start = int(max(labels.max(initial=-1), tombstones.max(initial=-1))) + 1
            fresh = np.arange(start, start + len(new_embeddings), dtype=np.int64)
            faiss_index.add_items(engine, new_embeddings, fresh)
            labels = np.concatenate([labels, fresh])
        return {"engine": engine, "labels": labels, "tombstones": tombstones}
    return {}
