"""faiss as the offline engine for galleries too big for one SavedModel.

Three index types, all by inner product (the embeddings are unit rows):
``faiss-ivf`` (IndexIVFFlat), ``faiss-ivfpq`` (IndexIVFPQ, optionally behind an OPQ
rotation and re-ranked with 8-bit scalar-quantised vectors) and ``faiss-hnsw``
(IndexHNSWFlat). faiss is an optional extra (``pip install vse_tf[faiss]``), imported only
when one of these backends is built or loaded. Labels are int64 ids of faiss's own; the
index folder maps them to gallery rows (``labels.npy``). HNSW cannot delete, so a removed
item stays in the graph and a search excludes it with an ID selector.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

FAISS_BACKENDS = ("faiss-ivf", "faiss-ivfpq", "faiss-hnsw")


@dataclasses.dataclass(frozen=True)
class FaissParams:
    """Settings of the faiss backends (each reads the fields it needs).

    Attributes:
        nlist: IVF lists; 0 picks ``4 * sqrt(N)``.
        nprobe: IVF lists searched per query (default of a request).
        pq_m: IVF-PQ sub-quantisers (code bytes per item at 8 bits).
        pq_nbits: bits per sub-quantiser code.
        opq: learn an OPQ rotation before IVF-PQ.
        opq_iterations: alternations of the OPQ rotation and codebook training.
        opq_train_size: rows the OPQ rotation trains on.
        refine: ``none``, or ``sq8`` (re-rank ``refine_factor * k`` PQ candidates with
            8-bit scalar-quantised vectors, ``D`` more bytes per item).
        refine_factor: candidates re-ranked per result.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build-time beam.
        ef_search: HNSW search-time beam (default of a request).
        train_size: rows sampled to train quantisers (0: ``64 * nlist``, at most N).
        seed: sampling seed.
    """

    nlist: int = 0
    nprobe: int = 32
    pq_m: int = 16
    pq_nbits: int = 8
    opq: bool = True
    refine: str = "none"
    refine_factor: int = 4
    opq_iterations: int = 10
    opq_train_size: int = 32768
    hnsw_m: int = 16
    ef_construction: int = 40
    ef_search: int = 64
    train_size: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.refine not in ("none", "sq8"):
            raise ValueError(f"faiss refine must be 'none' or 'sq8', got {self.refine!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FaissParams:
        return cls(**values)


def import_faiss():
    """The faiss module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("the faiss backends need faiss: pip install 'vse_tf[faiss]' (faiss-cpu==1.15.1)") from error
    return faiss


def build_faiss_index(backend: str, embeddings: np.ndarray, labels: np.ndarray, params: FaissParams):
    """Trains (when the type needs it) and fills a faiss index.

    Args:
        backend: one of :data:`FAISS_BACKENDS`.
        embeddings: ``float32 [N, D]`` unit rows.
        labels: ``int64 [N]`` faiss label of each row.
    """
    faiss = import_faiss()
    from vse_tf.serving.ivf import default_nlist

    embeddings = np.ascontiguousarray(embeddings, np.float32)
    dim = embeddings.shape[1]
    if backend == "faiss-hnsw":
        index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT))
        faiss.downcast_index(index.index).hnsw.efConstruction = params.ef_construction
        index.add_with_ids(embeddings, labels)
        return index
    nlist = params.nlist or default_nlist(len(embeddings))
    if backend == "faiss-ivf":
        description = f"IVF{nlist},Flat"
    elif backend == "faiss-ivfpq":
        rotation = f"OPQ{params.pq_m}," if params.opq else ""
        refine = ",Refine(SQ8)" if params.refine == "sq8" else ""
        description = f"{rotation}IVF{nlist},PQ{params.pq_m}x{params.pq_nbits}{refine}"
    else:
        raise ValueError(f"unknown faiss backend {backend!r}; expected one of {FAISS_BACKENDS}")
    index = faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT)
    _fast_training(faiss, index, params)
    index.train(_training_sample(embeddings, params.train_size or 64 * nlist, params.seed))
    _add_with_ids(faiss, index, embeddings, labels)
    return index


def _fast_training(faiss, index, params: FaissParams) -> None:
    """Skips polysemous training (codes are compared by tables here, never by Hamming
    distance) and caps the OPQ rotation's iterations and sample."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if isinstance(ivf, faiss.IndexIVFPQ):
        ivf.do_polysemous_training = False
    refine = _as_refine(faiss, index)
    chain = faiss.downcast_index(refine.base_index if refine is not None else index)
    if isinstance(chain, faiss.IndexPreTransform):
        rotation = faiss.downcast_VectorTransform(chain.chain.at(0))
        rotation.niter = params.opq_iterations
        rotation.max_train_points = params.opq_train_size


def _training_sample(embeddings: np.ndarray, size: int, seed: int) -> np.ndarray:
    size = min(len(embeddings), size)
    chosen = np.sort(np.random.default_rng(seed).choice(len(embeddings), size, replace=False))
    return np.ascontiguousarray(embeddings[chosen])


def _add_with_ids(faiss, index, embeddings: np.ndarray, labels: np.ndarray) -> None:
    """``add_with_ids``; a refine wrapper adds to its base IVF index with ids, then to the refiner."""
    refine = _as_refine(faiss, index)
    if refine is None:
        index.add_with_ids(np.ascontiguousarray(embeddings, np.float32), np.asarray(labels, np.int64))
        return
    # IndexRefine numbers its rows 0..ntotal-1 (no ids of its own): the labels are rows then.
    raise_if_not_rows(refine.ntotal, labels)
    refine.add(np.ascontiguousarray(embeddings, np.float32))


def _as_refine(faiss, index):
    downcast = faiss.downcast_index(index)
    return downcast if isinstance(downcast, faiss.IndexRefine) else None


def raise_if_not_rows(start: int, labels: np.ndarray) -> None:
    if not np.array_equal(labels, np.arange(start, start + len(labels))):
        raise ValueError("a re-ranked (refine) faiss index numbers its items in order; labels must be consecutive")


def add_items(index, embeddings: np.ndarray, labels: np.ndarray) -> None:
    """Adds rows to a built index (no retraining)."""
    faiss = import_faiss()
    _add_with_ids(faiss, index, embeddings, labels)


def remove_items(index, labels: np.ndarray) -> bool:
    """Deletes ``labels`` from an index that can; returns False for HNSW and refine (tombstones then)."""
    faiss = import_faiss()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if isinstance(inner, faiss.IndexHNSW) or _as_refine(faiss, index) is not None:
        return False
    index.remove_ids(faiss.IDSelectorBatch(np.asarray(labels, np.int64)))
    return True


def search(index, queries: np.ndarray, k: int, nprobe: int, ef_search: int, excluded: np.ndarray):
    """Top-``k`` labels and inner products: ``(labels int64 [Q, k] (-1 pads), scores float32 [Q, k])``.

    ``excluded`` are tombstoned labels (removed from an index that cannot delete): the
    search asks for ``k + len(excluded)`` and drops them, so the answer stays exact to the
    index's own approximation.
    """
    faiss = import_faiss()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = max(ef_search, k + len(excluded))
    else:
        faiss.extract_index_ivf(index).nprobe = nprobe
    queries = np.ascontiguousarray(queries, np.float32)
    scores, labels = index.search(queries, k + len(excluded))
    if len(excluded):
        labels, scores = _drop_labels(labels, scores, np.asarray(excluded, np.int64), k)
    return labels, scores


def _drop_labels(labels: np.ndarray, scores: np.ndarray, excluded: np.ndarray, k: int):
    keep = ~np.isin(labels, excluded)
    kept_labels = np.full((len(labels), k), -1, np.int64)
    kept_scores = np.full((len(labels), k), -np.inf, np.float32)
    for row in range(len(labels)):
        chosen = np.flatnonzero(keep[row])[:k]
        kept_labels[row, : len(chosen)] = labels[row, chosen]
        kept_scores[row, : len(chosen)] = scores[row, chosen]
    return kept_labels, kept_scores


def set_refine_factor(index, factor: int) -> None:
    """Candidates re-ranked per result of a refine index (no effect on other types)."""
    faiss = import_faiss()
    refine = _as_refine(faiss, index)
    if refine is not None:
        refine.k_factor = float(factor)


def write_faiss(index, path: Path) -> None:
    faiss = import_faiss()
    faiss.write_index(index, str(path))


def read_faiss(path: Path):
    faiss = import_faiss()
    return faiss.read_index(str(path))


def index_bytes(index) -> int:
    """Bytes of the serialised index (codes, ids, quantisers, graph): its memory footprint."""
    faiss = import_faiss()
    return int(faiss.serialize_index(index).nbytes)


def code_bytes(index) -> int:
    """Bytes of one item's code (excluding faiss's 8-byte id and graph links)."""
    faiss = import_faiss()
    refine = _as_refine(faiss, index)
    if refine is not None:
        return int(faiss.extract_index_ivf(refine.base_index).code_size + refine.refine_index.sa_code_size())
    try:
        return int(faiss.extract_index_ivf(index).code_size)
    except RuntimeError:
        return int(faiss.downcast_index(index.index).storage.sa_code_size())
