"""Benchmark: exact, core-TF IVF and faiss indexes over a clustered gallery.

    python bench/index.py [--items 1000000] [--queries 10000] [--dim 256] [--gallery INDEX]

The data (``clustered_gallery``): unit vectors from a two-level Gaussian mixture with a
decaying spectrum, like real embeddings (a few directions carry most of the variance):
``items / 100`` clusters grouped under 100 topics; an item is topic centre + cluster
offset + item noise, each drawn from ``N(0, diag(s))`` with ``s_i`` proportional to
``1 / (1 + i)`` (scaled to unit expected norm), with weights 1, 0.7 and 1.0, then
normalised. Queries come from the same clusters with fresh noise (they are not gallery
items). ``--gallery INDEX`` adds the embeddings of a real index folder (queries: its
own rows with noise).

For each backend at its default setting: build seconds (k-means / training, adding,
writing the folder), serving bytes per item, queries/s at batch 1 and 64, recall@10 (the
share of the exact top-10 found, averaged over the queries). Then an nprobe sweep of
the core-TF IVF and faiss IVF indexes (recall on the first 2,000 queries), plotted as
recall against queries/s. Prints a table and writes
bench/results/index.json and bench/results/index_nprobe.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# faiss's OpenMP threads otherwise spin while waiting; on a shared 2-core machine that
# costs more than it saves (x10 on training here). Set before faiss is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from results_file import RESULTS_DIR, write_results  # noqa: E402

from vse_tf.serving import faiss_index  # noqa: E402
from vse_tf.serving.index import EmbeddingIndex  # noqa: E402
from vse_tf.serving.index_store import BACKENDS, SearchIndex, load_index, write_index  # noqa: E402
from vse_tf.serving.ivf import default_nlist  # noqa: E402

K = 10
TOPICS = 100
ITEMS_PER_CLUSTER = 100
ITEM_NOISE = 1.0
SWEEP_QUERIES = 2000
SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)
VARIANTS = {
    "ivf int8": ("ivf", {"quantize": "int8"}),
    "faiss-ivfpq + SQ8 re-rank": ("faiss-ivfpq", {"refine": "sq8"}),
}


def spectrum(dim: int) -> np.ndarray:
    """Per-dimension standard deviations ``~ 1/sqrt(1+i)``: unit expected norm."""
    variances = 1.0 / (1.0 + np.arange(dim))
    return np.sqrt(variances / variances.sum()).astype(np.float32)


def clustered_gallery(items: int, queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(gallery float32 [items, D], queries float32 [queries, D])``, unit rows (see the module doc)."""
    rng = np.random.default_rng(seed)
    scale = spectrum(dim)
    clusters = max(1, items // ITEMS_PER_CLUSTER)
    topics = rng.standard_normal((TOPICS, dim), dtype=np.float32) * scale
    topic_of = rng.integers(0, TOPICS, clusters)
    centres = topics[topic_of] + 0.7 * rng.standard_normal((clusters, dim), dtype=np.float32) * scale

    def draw(count: int) -> np.ndarray:
        rows = np.empty((count, dim), np.float32)
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            chosen = rng.integers(0, clusters, stop - start)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * scale
            block = centres[chosen] + ITEM_NOISE * noise
            rows[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return rows

    return draw(items), draw(queries)


def real_gallery(path: str, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An index folder's embeddings, and queries made from its rows plus a little noise."""
    gallery = EmbeddingIndex.load(path).embeddings
    rng = np.random.default_rng(seed)
    chosen = gallery[rng.integers(0, len(gallery), queries)]
    noisy = chosen + 0.05 * rng.standard_normal(chosen.shape, dtype=np.float32) / np.sqrt(gallery.shape[1])
    return gallery, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def exact_top_k(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices ``int64 [Q, k]`` of the exact top-k, in TF (matmul + top_k), 256 queries at a time."""
    variable = tf.constant(gallery)
    rank = tf.function(lambda q: tf.math.top_k(tf.matmul(q, variable, transpose_b=True), k=k).indices)
    return np.concatenate([rank(tf.constant(queries[s : s + 256])).numpy() for s in range(0, len(queries), 256)])


def recall_at_k(found_ids: list[list[str]], exact_rows: np.ndarray, ids: tuple[str, ...]) -> float:
    """Mean share of the exact top-k ids among the found ones."""
    hits = [len(set(found) & {ids[row] for row in exact}) for found, exact in zip(found_ids, exact_rows)]
    return float(np.mean(hits)) / exact_rows.shape[1]


def searcher(index: SearchIndex, nprobe: int | None):
    """``queries -> result`` as a server calls the engine (ids left as the engine returns them)."""
    if index.backend == "exact":
        gallery = tf.constant(index.gallery.embeddings)
        rank = tf.function(lambda q: tf.math.top_k(tf.matmul(q, gallery, transpose_b=True), k=K))
        return lambda queries: rank(tf.constant(queries))
    if index.backend == "ivf":
        signature = index.engine.signatures["search"]
        probes = tf.constant(nprobe or index.params["nprobe"], tf.int32)
        return lambda queries: signature(embeddings=tf.constant(queries), nprobe=probes, k=tf.constant(K))
    probes = nprobe or index.params["nprobe"]
    beam = nprobe or index.params["ef_search"]
    return lambda queries: faiss_index.search(index.engine, queries, K, probes, beam, index.tombstones)


def queries_per_second(search, queries: np.ndarray, batch: int, budget_seconds: float) -> float:
    """Batches in order until the query set or the time budget runs out (after one warm-up call)."""
    search(queries[:batch])
    done, started = 0, time.perf_counter()
    for start in range(0, len(queries) - batch + 1, batch):
        search(queries[start : start + batch])
        done += batch
        if time.perf_counter() - started > budget_seconds:
            break
    return done / (time.perf_counter() - started)


# The core-TF IVF gathers every probed list's vectors for each query of a request:
# queries x nprobe x (items / nlist) rows of D floats. Recall is measured in requests of at
# most this many gathered rows (2 GB at D = 256).
GATHERED_ROWS = 2_000_000


def request_size(index: SearchIndex, nprobe: int | None) -> int:
    if index.backend != "ivf":
        return 256
    probes = nprobe or index.params["nprobe"]
    items = len(index.gallery.ids)
    per_list = items / min(items, int(index.params.get("nlist") or default_nlist(items)))
    return int(max(1, min(256, GATHERED_ROWS // max(1.0, probes * per_list))))


def all_results(index: SearchIndex, queries: np.ndarray, nprobe: int | None) -> list[list[str]]:
    found: list[list[str]] = []
    size = request_size(index, nprobe)
    for start in range(0, len(queries), size):
        found.extend(index.search(queries[start : start + size], K, nprobe)[0])
    return found


def measure(index: SearchIndex, queries, exact_rows, nprobe, budget: float) -> dict:
    search = searcher(index, nprobe)
    return {
        "recall_at_10": recall_at_k(all_results(index, queries, nprobe), exact_rows, index.gallery.ids),
        "qps_batch1": queries_per_second(search, queries, 1, budget),
        "qps_batch64": queries_per_second(search, queries, 64, budget),
    }


def build(root: Path, name: str, gallery: EmbeddingIndex, backend: str, params: dict) -> tuple[SearchIndex, float]:
    started = time.perf_counter()
    write_index(root / name.replace(" ", "_").replace("+", ""), gallery, backend, params)
    index = load_index(root / name.replace(" ", "_").replace("+", ""))
    return index, time.perf_counter() - started


def row(name: str, backend: str, index: SearchIndex, seconds: float, measured: dict, dataset: str) -> dict:
    items = len(index.gallery.ids)
    out = {
        "backend": name,
        "engine": backend,
        "dataset": dataset,
        "items": items,
        "dim": index.dim,
        **measured,
        "bytes_per_item": index.serving_bytes() / items,
        "build_seconds": seconds,
        "params": index.params,
    }
    if backend in faiss_index.FAISS_BACKENDS:
        out["code_bytes_per_item"] = faiss_index.code_bytes(index.engine)
    return out


def benchmark(gallery_rows, queries, dataset: str, root: Path, budget: float, sweep: bool) -> dict:
    ids = tuple(str(i) for i in range(len(gallery_rows)))
    gallery = EmbeddingIndex("images", ids, gallery_rows, "bench")
    started = time.perf_counter()
    exact_rows = exact_top_k(gallery_rows, queries, K)
    print(f"[{dataset}] exact top-{K} of {len(queries)} queries: {time.perf_counter() - started:.1f} s", flush=True)
    rows, variants, sweep_rows = [], [], []
    for name, (backend, params) in [*((b, (b, {})) for b in BACKENDS), *VARIANTS.items()]:
        index, seconds = build(root / dataset, name, gallery, backend, params)
        measured = measure(index, queries, exact_rows, None, budget)
        result = row(name, backend, index, seconds, measured, dataset)
        (rows if name in BACKENDS else variants).append(result)
        print_row(result)
        if sweep and backend in ("ivf", "faiss-ivf") and name in BACKENDS:
            for nprobe in SWEEP:
                subset = slice(0, SWEEP_QUERIES)
                measured = measure(index, queries[subset], exact_rows[subset], nprobe, budget / 2)
                point = {"backend": name, "nprobe": nprobe, **measured}
                sweep_rows.append(point)
                print(
                    f"    nprobe {nprobe:4d}: recall@10 {point['recall_at_10']:.3f}, "
                    f"qps {point['qps_batch1']:.0f} / {point['qps_batch64']:.0f}",
                    flush=True,
                )
        del index
    return {"rows": rows, "variants": variants, "sweep": sweep_rows}


def print_row(result: dict) -> None:
    print(
        f"{result['backend']:<28} {result['items']:>9} recall@10 {result['recall_at_10']:.3f}  "
        f"qps b1 {result['qps_batch1']:8.1f}  b64 {result['qps_batch64']:8.1f}  "
        f"{result['bytes_per_item']:8.1f} B/item  build {result['build_seconds']:7.1f} s",
        flush=True,
    )


def plot_sweep(sweep_rows: list[dict], exact: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, key, title in zip(axes, ("qps_batch1", "qps_batch64"), ("batch 1", "batch 64")):
        for backend in sorted({point["backend"] for point in sweep_rows}):
            points = [point for point in sweep_rows if point["backend"] == backend]
            axis.plot([p[key] for p in points], [p["recall_at_10"] for p in points], "o-", label=backend)
            for p in points:
                axis.annotate(
                    str(p["nprobe"]), (p[key], p["recall_at_10"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        axis.axvline(exact[key], color="grey", linestyle="--", label="exact (recall 1)")
        axis.set_xscale("log")
        axis.set_xlabel("queries/s")
        axis.set_title(f"{exact['items']:,} x {exact['dim']}, {title} (labels: nprobe)")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("recall@10")
    axes[0].legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--gallery", help="an index folder whose embeddings to add as a second data set")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timed queries per batch size")
    parser.add_argument("--results_dir", type=Path, default=None)
    parser.add_argument("--work_dir", help="where the index folders go (default: a temporary folder)")
    args = parser.parse_args(argv)
    gallery_rows, queries = clustered_gallery(args.items, args.queries, args.dim)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        report = benchmark(gallery_rows, queries, "clustered", Path(work), args.budget, sweep=True)
        del gallery_rows
        if args.gallery:
            real, real_queries = real_gallery(args.gallery, args.queries)
            extra = benchmark(real, real_queries, Path(args.gallery).name, Path(work), args.budget, sweep=False)
            report["real_gallery"] = extra
    results_dir = args.results_dir or RESULTS_DIR
    exact = next(r for r in report["rows"] if r["backend"] == "exact")
    plot = results_dir / "index_nprobe.png"
    plot_sweep(report["sweep"], exact, plot)
    path = write_results(
        "index",
        {
            "tensorflow": tf.__version__,
            "faiss": faiss_index.import_faiss().__version__,
            "k": K,
            "data": "clustered: two-level Gaussian mixture, decaying spectrum (bench/index.py)",
            **report,
        },
        results_dir,
    )
    print(f"results: {path}\nplot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
