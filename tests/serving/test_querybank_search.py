"""Search with querybank normalisation, against a float64 loop of the inverted softmax."""

import math

import numpy as np
import pytest

from vse_tf.serving.index import EmbeddingIndex
from vse_tf.serving.index_store import load_index, write_index
from vse_tf.serving.querybank_search import querybank_search


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def naive_normalised_top_k(queries, gallery, bank, beta, k):
    """For each query and item: exp(beta s(q,g)) / sum_b exp(beta s(b,g)), scored in float64 loops."""
    result = []
    for query in queries.astype(np.float64):
        scores = []
        for item in gallery.astype(np.float64):
            denominator = sum(math.exp(beta * float(b @ item)) for b in bank.astype(np.float64))
            scores.append(math.exp(beta * float(query @ item)) / denominator)
        result.append(sorted(range(len(gallery)), key=lambda g: -scores[g])[:k])
    return result


@pytest.fixture(scope="module")
def hubby():
    """A gallery with hubs: a few items near the centre of the bank queries."""
    rng = np.random.default_rng(7)
    gallery = unit(rng.normal(size=(300, 8)))
    centre = unit(rng.normal(size=(1, 8)))
    gallery[:5] = unit(centre + 0.05 * rng.normal(size=(5, 8)))
    bank = unit(centre + 0.8 * rng.normal(size=(200, 8)))
    queries = unit(centre + 0.8 * rng.normal(size=(12, 8)))
    return gallery, bank, queries, tuple(f"g{i}" for i in range(len(gallery)))


def test_exact_backend_ranks_like_the_float64_inverted_softmax(hubby, tmp_path):
    gallery, bank, queries, ids = hubby
    index = load_index(write_index(tmp_path / "index", EmbeddingIndex("images", ids, gallery, "m/1"), "exact"))
    found, scores = querybank_search(index, queries, 5, bank, beta=10.0)
    expected = naive_normalised_top_k(queries, gallery, bank, 10.0, 5)
    assert found == [[ids[g] for g in line] for line in expected]
    offsets = [math.log(sum(math.exp(10.0 * float(b @ gallery[0])) for b in bank.astype(np.float64))) / 10.0]
    top = [line[0] for line in expected]
    if 0 in top:  # the score is s - offset
        position = top.index(0)
        np.testing.assert_allclose(scores[position, 0], float(queries[position] @ gallery[0]) - offsets[0], atol=1e-5)
    # the plain ranking of the same queries is different: the hubs lead it
    plain, _ = index.search(queries, 5)
    assert sum(item in {"g0", "g1", "g2", "g3", "g4"} for line in plain for item in line) > sum(
        item in {"g0", "g1", "g2", "g3", "g4"} for line in found for item in line
    )


def test_approximate_backend_reranks_its_candidates(hubby, tmp_path):
    gallery, bank, queries, ids = hubby
    params = {"nlist": 6, "nprobe": 6, "k": 10}  # every list probed: the candidates are the exact top ones
    index = load_index(write_index(tmp_path / "index", EmbeddingIndex("images", ids, gallery, "m/1"), "ivf", params))
    found, scores = querybank_search(index, queries, 4, bank, beta=10.0, candidates=300)
    expected = naive_normalised_top_k(queries, gallery, bank, 10.0, 4)
    assert found == [[ids[g] for g in line] for line in expected]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # fewer candidates than k: the row is padded
    short, short_scores = querybank_search(index, queries[:1], 4, bank, candidates=2)
    assert short[0][2:] == ["", ""] and np.isinf(short_scores[0, 2:]).all()


def test_a_bank_of_the_wrong_width_is_refused(hubby, tmp_path):
    gallery, bank, queries, ids = hubby
    index = load_index(write_index(tmp_path / "index", EmbeddingIndex("images", ids, gallery, "m/1"), "exact"))
    with pytest.raises(ValueError, match="querybank: bank of shape \\(200, 4\\)"):
        querybank_search(index, queries, 3, bank[:, :4])
