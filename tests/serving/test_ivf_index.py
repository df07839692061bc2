"""The core-TF IVF index, the faiss backends, versioned index folders and their checks."""

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vse_tf.serving.index import EmbeddingIndex, IndexFolderError
from vse_tf.serving.index_store import load_index, update_index, version_numbers, write_index
from vse_tf.serving.ivf import (
    IvfSearch,
    assign_to_lists,
    build_layout,
    quantize_int8,
    spherical_kmeans,
    train_coarse_quantizer,
)
from vse_tf.serving.model_card import saved_model_ops


def clustered(items: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.35):
    """Unit rows around ``clusters`` random centres, and queries drawn the same way."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    rows = centres[rng.integers(0, clusters, items)] + spread * rng.normal(size=(items, dim))
    queries = centres[rng.integers(0, clusters, 40)] + spread * rng.normal(size=(40, dim))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(rows), unit(queries), unit(centres)


def naive_top_k(queries, gallery, k):
    """float64 scores, full sort: the reference."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def recall(found_ids, exact_rows, ids):
    return np.mean([len(set(f) & {ids[r] for r in e}) / len(e) for f, e in zip(found_ids, exact_rows)])


@pytest.fixture(scope="module")
def data():
    rows, queries, centres = clustered(3000, 16, 30)
    ids = tuple(f"item{i}" for i in range(len(rows)))
    return {"rows": rows, "queries": queries, "centres": centres, "ids": ids}


def test_spherical_kmeans_finds_separated_clusters():
    rows, _, centres = clustered(2000, 16, 10, seed=3, spread=0.1)
    centroids = spherical_kmeans(rows, 10, seed=1)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    # every true centre has a centroid close to it
    assert np.min(np.max(centres @ centroids.T, axis=1)) > 0.99


def test_int8_codes_reconstruct_each_dimension(data):
    codes, scales = quantize_int8(data["rows"])
    assert codes.dtype == np.int8 and scales.shape == (16,)
    np.testing.assert_allclose(codes * scales, data["rows"], atol=float(scales.max()) / 2 + 1e-7)


def test_ivf_graph_against_exact_search(data):
    rows, queries, ids = data["rows"], data["queries"], data["ids"]
    centroids = train_coarse_quantizer(rows, 40)
    lists = assign_to_lists(rows, centroids)
    want_rows, want_scores = naive_top_k(queries, rows, 10)
    layout = build_layout(rows, centroids, lists, "none")
    ivf = IvfSearch(layout, [ids[row] for row in layout.rows])
    # every list probed: exactly the brute-force answer
    everything = ivf.rank(queries, 40, 10)
    got = everything["ids"].numpy().astype(str)
    np.testing.assert_array_equal(got, np.array(ids)[want_rows])
    np.testing.assert_allclose(everything["scores"].numpy(), want_scores, atol=1e-5)
    few = ivf.rank(queries, 4, 10)["ids"].numpy().astype(str)
    assert recall(few, want_rows, ids) >= 0.9
    codes = build_layout(rows, centroids, lists, "int8")
    assert codes.vectors.dtype == np.int8 and codes.vectors.nbytes * 4 == layout.vectors.nbytes
    quantised = IvfSearch(codes, [ids[row] for row in codes.rows]).rank(queries, 40, 10)
    assert recall(quantised["ids"].numpy().astype(str), want_rows, ids) >= 0.9
    np.testing.assert_allclose(quantised["scores"].numpy(), want_scores, atol=0.02)


def test_fewer_rows_than_k_pad_with_empty_ids():
    rows = np.eye(4, dtype=np.float32)
    layout = build_layout(rows, rows[:2], np.array([0, 0, 1, 1], np.int32), "none")
    result = IvfSearch(layout, ["a", "b", "c", "d"]).rank(rows[:1], 1, 5)
    assert result["ids"].numpy().astype(str).tolist() == [["a", "b", "", "", ""]]
    assert np.isneginf(result["scores"].numpy()[0, 2:]).all()


RELOAD_IVF = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    assert "vse_tf" not in sys.modules
    model = tf.saved_model.load(sys.argv[1])
    queries = tf.constant(np.array(json.loads(sys.argv[2]), np.float32))
    tuned = model.signatures["search"](embeddings=queries, nprobe=tf.constant(1000), k=tf.constant(7))
    default = model.signatures["serving_default"](embeddings=queries)
    print(json.dumps({
        "ids": tuned["ids"].numpy().astype(str).tolist(),
        "scores": tuned["scores"].numpy().tolist(),
        "default_shape": list(default["ids"].shape),
        "vse_tf": "vse_tf" in sys.modules,
    }))
    """
)


@pytest.mark.slow
def test_ivf_index_folder_is_a_saved_model_plain_tensorflow_serves(data, tmp_path):
    gallery = EmbeddingIndex("images", data["ids"][:800], data["rows"][:800], "models/image_encoder/1")
    version = write_index(tmp_path / "index", gallery, "ivf", {"nlist": 20, "nprobe": 3, "k": 4})
    assert version == tmp_path / "index" / "1"
    queries = data["queries"][:5]
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_IVF, str(version), json.dumps(queries.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    want_rows, want_scores = naive_top_k(queries, gallery.embeddings, 7)
    assert answer["ids"] == np.array(gallery.ids)[want_rows].tolist()
    np.testing.assert_allclose(answer["scores"], want_scores, atol=1e-5)
    assert answer["default_shape"] == [5, 4] and not answer["vse_tf"]
    card = json.loads((version / "assets.extra" / "model_card.json").read_text())
    assert card["custom_ops"] == [] and {"TopKV2", "RaggedRange", "GatherV2"} <= set(saved_model_ops(version))


def digest(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in directory.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    "backend,params",
    [
        ("exact", {}),
        ("ivf", {"nlist": 20, "nprobe": 20}),
        ("faiss-ivf", {"nlist": 20, "nprobe": 20}),
        ("faiss-ivfpq", {"nlist": 10, "nprobe": 10, "pq_m": 4, "opq": False, "refine": "sq8"}),
        ("faiss-hnsw", {"ef_search": 200}),
    ],
)
def test_add_and_remove_write_new_versions(data, tmp_path, backend, params):
    rows, ids = data["rows"][:1000], data["ids"][:1000]
    root = tmp_path / "index"
    first = write_index(root, EmbeddingIndex("images", ids, rows, "m/1"), backend, params)
    before = digest(first)
    removed = list(ids[:50])
    added = EmbeddingIndex("images", ("new-a", "new-b", "item60"), data["rows"][1000:1003], "m/1")
    second = update_index(root, added, removed)
    assert version_numbers(root) == [1, 2] and second == root / "2"
    assert digest(first) == before  # the served version is never touched
    index = load_index(root)
    assert index.directory == second and index.backend == backend
    assert len(index.gallery.ids) == 1000 - 50 + 2 and "item0" not in index.gallery.ids
    assert index.gallery.ids.count("item60") == 1  # re-added: replaced
    # each added vector finds itself first
    found, scores = index.search(data["rows"][1000:1003], 5)
    assert [line[0] for line in found] == ["new-a", "new-b", "item60"]
    # removed items are never returned, even for their own vectors
    found, _ = index.search(rows[:50], 10)
    assert not set(removed) & {item for line in found for item in line}
    # against brute force over the new gallery
    exact_rows, _ = naive_top_k(data["queries"], index.gallery.embeddings, 10)
    found, _ = index.search(data["queries"], 10)
    assert recall(found, exact_rows, index.gallery.ids) >= (0.99 if backend in ("exact", "ivf", "faiss-ivf") else 0.8)
    third = update_index(root, removed=["new-a"])
    assert load_index(third).gallery.ids.count("new-a") == 0 and len(load_index(root / "2").gallery.ids) == 952
    with pytest.raises(KeyError, match="no such ids"):
        update_index(root, removed=["never-there"])


def corrupt(version, case):
    meta_path = version / "index.json"
    meta = json.loads(meta_path.read_text())
    if case == "wrong dims":
        meta["dim"] = 32
        meta_path.write_text(json.dumps(meta))
        return "embeddings.npy"
    if case == "missing ids":
        (version / "ids.json").unlink()
        return "ids.json"
    if case == "ids/vectors count mismatch":
        ids = json.loads((version / "ids.json").read_text())
        (version / "ids.json").write_text(json.dumps(ids[:-1]))
        meta["count"] = len(ids) - 1
        meta_path.write_text(json.dumps(meta))
        return "embeddings.npy"
    if case == "ivf lists of another gallery":
        state = dict(np.load(version / "ivf.npz"))
        np.savez(version / "ivf.npz", centroids=state["centroids"], lists=state["lists"][:-3])
        return "ivf.npz"
    if case == "ivf centroids of another dim":
        state = dict(np.load(version / "ivf.npz"))
        np.savez(version / "ivf.npz", centroids=state["centroids"][:, :8], lists=state["lists"])
        return "ivf.npz"
    if case == "faiss index of another gallery":
        np.save(version / "labels.npy", np.load(version / "labels.npy")[:-1])
        return "labels.npy"
    if case == "embeddings not float32":
        np.save(version / "embeddings.npy", np.load(version / "embeddings.npy").astype(np.float64))
        return "embeddings.npy"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "backend,case",
    [
        ("exact", "wrong dims"),
        ("exact", "missing ids"),
        ("exact", "ids/vectors count mismatch"),
        ("exact", "embeddings not float32"),
        ("ivf", "ivf lists of another gallery"),
        ("ivf", "ivf centroids of another dim"),
        ("faiss-ivf", "faiss index of another gallery"),
    ],
)
def test_a_corrupt_or_mismatched_folder_is_refused_naming_the_file(data, tmp_path, backend, case):
    gallery = EmbeddingIndex("captions", data["ids"][:300], data["rows"][:300], "m/1")
    version = write_index(tmp_path / "index", gallery, backend, {"nlist": 8} if backend != "exact" else {})
    name = corrupt(version, case)
    with pytest.raises(IndexFolderError, match=name.replace(".", r"\.")):
        load_index(tmp_path / "index")


def test_queries_of_another_dim_and_existing_versions_are_refused(data, tmp_path):
    gallery = EmbeddingIndex("images", data["ids"][:100], data["rows"][:100], "m/1")
    write_index(tmp_path / "index", gallery, "exact")
    with pytest.raises(FileExistsError):
        write_index(tmp_path / "index", gallery, "exact", version=1)
    with pytest.raises(ValueError, match="dim 16"):
        load_index(tmp_path / "index").search(np.zeros((1, 8), np.float32), 3)
    with pytest.raises(ValueError, match="unknown index backend"):
        write_index(tmp_path / "other", gallery, "scann")
