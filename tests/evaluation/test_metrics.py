import numpy as np
import pytest
from conftest import naive_ranks

from vse_tf.evaluation.metrics import METRIC_KEYS, evaluate_retrieval, retrieval_ranks
from vse_tf.evaluation.reports import format_recall_table


def random_problem(num_images, captions_per_image, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(num_images), captions_per_image)
    images = rng.normal(size=(num_images, dim)).astype(np.float32)
    captions = (images[owner] + 1.5 * rng.normal(size=(len(owner), dim))).astype(np.float32)
    return images, captions, owner


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_ranks_match_naive_loop_with_uneven_captions(chunk_size):
    counts = np.array([1, 5, 3, 2, 5, 4, 1, 6])
    images, captions, owner = random_problem(len(counts), counts)
    order = np.random.default_rng(1).permutation(len(owner))  # captions in any order
    got = retrieval_ranks(images, captions[order], owner[order], chunk_size=chunk_size)
    want = naive_ranks(images, captions[order], owner[order])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_ties_count_against_the_query():
    images = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    captions = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    image_ranks, caption_ranks = retrieval_ranks(images, captions, [0, 1, 2])
    np.testing.assert_array_equal(image_ranks, [1, 1, 0])
    np.testing.assert_array_equal(caption_ranks, [1, 1, 0])
    collapsed = evaluate_retrieval(np.ones((5, 2)), np.ones((10, 2)), np.repeat(np.arange(5), 2))
    assert collapsed["i2t_r1"] == 0.0 and collapsed["t2i_r1"] == 0.0


def test_metrics_follow_vsepp_definitions():
    images, captions, owner = random_problem(30, 5, seed=4)
    metrics = evaluate_retrieval(images, captions, owner)
    assert tuple(metrics) == METRIC_KEYS
    image_ranks, caption_ranks = naive_ranks(images, captions, owner)
    assert metrics["i2t_r5"] == pytest.approx(100 * np.mean(image_ranks < 5))
    assert metrics["t2i_r10"] == pytest.approx(100 * np.mean(caption_ranks < 10))
    assert metrics["i2t_medr"] == np.floor(np.median(image_ranks)) + 1
    assert metrics["t2i_meanr"] == pytest.approx(caption_ranks.mean() + 1)
    assert metrics["rsum"] == pytest.approx(sum(metrics[k] for k in METRIC_KEYS if "_r" in k and k[-1].isdigit()))


def test_positives_one_ulp_from_a_negative_are_ranked_exactly():
    # One-hot images make every score exactly a caption's component: no rounding anywhere,
    # so the float64 loop is the truth and a 1-ulp margin must decide the rank.
    positive = np.float32(0.7)
    below, above = np.nextafter(positive, np.float32(-1)), np.nextafter(positive, np.float32(1))
    images = np.eye(3, dtype=np.float32)
    captions = np.zeros((6, 3), dtype=np.float32)
    owner = np.array([0, 0, 1, 1, 2, 2])
    captions[0, 0], captions[2, 0] = positive, below  # image 0: its caption beats a rival by 1 ulp
    captions[1, 0] = 0.1
    captions[3, 1], captions[5, 1] = positive, above  # image 1: a rival 1 ulp above its caption
    captions[4, 2], captions[2, 2] = positive, below  # caption 2 (image 1) scores image 2 1 ulp low
    captions[2, 1] = positive
    got = retrieval_ranks(images, captions, owner)
    want = naive_ranks(images.astype(np.float64), captions.astype(np.float64), owner)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0][0] == 0 and got[0][1] == 1


def test_coco5k_sized_ranks_equal_float64_ranks():
    # Hard enough (R@10 about 50%) that float32 near-ties occur: a 1e-6 tolerance got 12
    # image ranks wrong here.
    rng = np.random.default_rng(7)
    num_images, per_image, dim = 5000, 5, 256
    owner = np.repeat(np.arange(num_images), per_image)
    images = rng.normal(size=(num_images, dim))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    captions = images[owner] + 7.0 * rng.normal(size=(len(owner), dim)) / np.sqrt(dim)
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    images32, captions32 = images.astype(np.float32), captions.astype(np.float32)
    got = retrieval_ranks(images32, captions32, owner)
    want = float64_ranks(images32.astype(np.float64), captions32.astype(np.float64), owner)
    assert np.count_nonzero(got[0] != want[0]) == 0
    assert np.count_nonzero(got[1] != want[1]) == 0


def float64_ranks(images, captions, owner, chunk=2500):
    """Vectorised ranks in float64, one caption chunk at a time (the float64 reference)."""
    num_images = len(images)
    caption_ranks = np.empty(len(owner), dtype=np.int64)
    best = np.full(num_images, -np.inf)
    for start in range(0, len(owner), chunk):
        scores = images @ captions[start : start + chunk].T
        cols = np.arange(scores.shape[1])
        own = scores[owner[start : start + chunk], cols]
        np.maximum.at(best, owner[start : start + chunk], own)
        caption_ranks[start : start + chunk] = (scores >= own).sum(axis=0) - 1
    image_ranks = np.zeros(num_images, dtype=np.int64)
    for start in range(0, len(owner), chunk):
        scores = images @ captions[start : start + chunk].T
        rivals = owner[start : start + chunk][None, :] != np.arange(num_images)[:, None]
        image_ranks += ((scores >= best[:, None]) & rivals).sum(axis=1)
    return image_ranks, caption_ranks


def test_non_finite_embeddings_are_refused():
    images, captions, owner = random_problem(4, 2)
    images[2, 1] = np.nan
    with pytest.raises(ValueError, match="image embedding.*not finite.*row 2"):
        evaluate_retrieval(images, captions, owner)


def test_perfect_embeddings_score_100():
    images = np.eye(4, dtype=np.float32)
    metrics = evaluate_retrieval(images, np.repeat(images, 2, axis=0), np.repeat(np.arange(4), 2))
    assert metrics["i2t_r1"] == metrics["t2i_r1"] == 100.0
    assert metrics["rsum"] == 600.0
    assert "image search" in format_recall_table(metrics)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no caption"):
        evaluate_retrieval(np.eye(3), np.eye(3)[:2], [0, 1])
    with pytest.raises(ValueError, match="one entry per caption"):
        evaluate_retrieval(np.eye(3), np.eye(3), [0, 1])
    with pytest.raises(ValueError, match="index"):
        evaluate_retrieval(np.eye(3), np.eye(3), [0, 1, 5])


def test_folds_average_the_metrics_of_consecutive_folds():
    images, captions, owner = random_problem(20, 5, seed=7)
    rng = np.random.default_rng(2)
    order = rng.permutation(len(owner))
    folded = evaluate_retrieval(images, captions[order], owner[order], folds=4)
    per_fold = []
    for fold in range(4):
        keep = (owner >= 5 * fold) & (owner < 5 * (fold + 1))
        per_fold.append(evaluate_retrieval(images[5 * fold : 5 * (fold + 1)], captions[keep], owner[keep] - 5 * fold))
    for key in METRIC_KEYS:
        assert folded[key] == pytest.approx(np.mean([m[key] for m in per_fold]))
    assert folded["rsum"] == pytest.approx(np.mean([m["rsum"] for m in per_fold]))
    # a fold sees fewer distractors: it can only score at least as well
    assert folded["rsum"] >= evaluate_retrieval(images, captions, owner)["rsum"]
    with pytest.raises(ValueError, match="folds=3"):
        evaluate_retrieval(images, captions, owner, folds=3)


def test_progress_goes_to_stderr(capsys):
    images, captions, owner = random_problem(4, 3)
    evaluate_retrieval(images, captions, owner, chunk_size=5, progress=True)
    err = capsys.readouterr().err
    assert "ranking captions" in err and "3/3 chunks" in err


def naive_average_precision(scores, relevant, at=None):
    """Per query: sort (ties: irrelevant first), walk the list."""
    results = []
    for row_scores, row_relevant in zip(scores, relevant):
        order = sorted(range(len(row_scores)), key=lambda j: (-row_scores[j], bool(row_relevant[j])))
        if at is not None:
            order = order[:at]
        hits, total = 0, 0.0
        for position, j in enumerate(order, start=1):
            if row_relevant[j]:
                hits += 1
                total += hits / position
        results.append(total / hits if hits else 0.0)
    return np.array(results)


@pytest.mark.parametrize("at", [None, 1, 4, 50])
def test_map_matches_naive_including_ties(at):
    from vse_tf.evaluation.metrics import average_precision, evaluate_map

    rng = np.random.default_rng(5)
    images = rng.normal(size=(12, 4)).astype(np.float32)
    texts = rng.normal(size=(15, 4)).astype(np.float32)
    texts[3] = texts[4] = texts[5]  # exact ties
    image_categories = rng.choice(["art", "sport", "war"], size=12)
    text_categories = rng.choice(["art", "sport", "war", "music"], size=15)  # "music" has no image
    scores = images @ texts.T
    relevant = image_categories[:, None] == text_categories[None, :]
    np.testing.assert_allclose(average_precision(scores, relevant, at), naive_average_precision(scores, relevant, at))
    metrics = evaluate_map(images, texts, image_categories, text_categories, at=at)
    assert metrics["i2t_map"] == pytest.approx(naive_average_precision(scores, relevant).mean())
    assert metrics["t2i_map"] == pytest.approx(naive_average_precision(scores.T, relevant.T).mean())
    if at:
        assert metrics[f"t2i_map_at_{at}"] == pytest.approx(naive_average_precision(scores.T, relevant.T, at).mean())


def test_map_hand_computed():
    from vse_tf.evaluation.metrics import average_precision

    # ranked: relevant, irrelevant, relevant -> (1/1 + 2/3) / 2
    scores = np.array([[0.9, 0.5, 0.7]])
    relevant = np.array([[True, True, False]])
    assert average_precision(scores, relevant)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores, relevant, at=2)[0] == pytest.approx(1.0)
    # a tie between a relevant and an irrelevant item counts against the query
    assert average_precision(np.array([[0.5, 0.5]]), np.array([[True, False]]))[0] == pytest.approx(0.5)


def test_recall_curves_match_the_metrics_and_plot(tmp_path):
    from vse_tf.evaluation.reports import plot_recall_curves, recall_curves

    images, captions, owner = random_problem(30, 5, seed=3)
    metrics = evaluate_retrieval(images, captions, owner)
    curves = recall_curves(*retrieval_ranks(images, captions, owner), max_k=20)
    assert curves["i2t"][0] == metrics["i2t_r1"] and curves["t2i"][9] == metrics["t2i_r10"]
    assert np.all(np.diff(curves["t2i"]) >= 0) and curves["k"][-1] == 20
    plot_recall_curves(curves, tmp_path / "curves.png", title="x")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
