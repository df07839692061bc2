import numpy as np
import pytest
import tensorflow as tf

from vse_tf.model.losses import triplet_ranking_loss


def naive_loss(images, captions, margin, max_violation, image_ids=None):
    """VSE++ ContrastiveLoss written as loops."""
    batch = len(images)
    ids = np.arange(batch) if image_ids is None else np.asarray(image_ids)
    scores = images @ captions.T
    total = 0.0
    for i in range(batch):
        caption_costs = [max(0.0, margin - scores[i, i] + scores[i, c]) for c in range(batch) if ids[c] != ids[i]]
        image_costs = [max(0.0, margin - scores[i, i] + scores[k, i]) for k in range(batch) if ids[k] != ids[i]]
        if max_violation:
            total += max(caption_costs, default=0.0) + max(image_costs, default=0.0)
        else:
            total += sum(caption_costs) + sum(image_costs)
    return total


def test_hand_computed_two_pairs():
    images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    captions = np.array([[0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    # scores = [[0.6, 0.0], [0.8, 1.0]]; margin 0.2
    # image 0: caption 1 costs max(0, .2 - .6 + 0) = 0; caption 0 vs image 1: .2 - .6 + .8 = .4
    # image 1: caption 0 costs .2 - 1 + .8 = 0 ; caption 1 vs image 0: .2 - 1 + 0 = 0
    loss = triplet_ranking_loss(images, captions, margin=0.2)
    assert float(loss) == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("max_violation", [False, True])
@pytest.mark.parametrize("with_ids", [False, True])
def test_matches_naive_loops(max_violation, with_ids):
    rng = np.random.default_rng(3)
    images = rng.normal(size=(9, 5)).astype(np.float32)
    captions = rng.normal(size=(9, 5)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    ids = np.array([0, 1, 1, 2, 3, 3, 3, 4, 5]) if with_ids else None
    got = triplet_ranking_loss(
        images, captions, margin=0.3, max_violation=max_violation, image_ids=None if ids is None else tf.constant(ids)
    )
    assert float(got) == pytest.approx(naive_loss(images, captions, 0.3, max_violation, ids), rel=1e-5)


def test_max_violation_can_be_a_tensor_and_mean_divides_by_batch():
    rng = np.random.default_rng(0)
    images, captions = rng.normal(size=(2, 6, 4)).astype(np.float32)
    hardest = triplet_ranking_loss(images, captions, max_violation=tf.constant(True))
    summed = triplet_ranking_loss(images, captions, max_violation=tf.constant(False))
    assert float(hardest) == pytest.approx(naive_loss(images, captions, 0.2, True), rel=1e-5)
    assert float(summed) > float(hardest)
    mean = triplet_ranking_loss(images, captions, reduction="mean")
    assert float(mean) == pytest.approx(float(summed) / 6, rel=1e-6)


def test_collapsed_embeddings_cost_twice_batch_times_margin():
    same = np.ones((4, 3), dtype=np.float32) / np.sqrt(3)
    loss = triplet_ranking_loss(same, same, margin=0.2, max_violation=True)
    assert float(loss) == pytest.approx(2 * 4 * 0.2, rel=1e-6)


def test_shared_image_pairs_are_not_negatives():
    images = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    captions = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert float(triplet_ranking_loss(images, captions, image_ids=tf.constant([7, 7]))) == 0.0
    assert float(triplet_ranking_loss(images, captions)) == pytest.approx(4 * 0.2)


def test_bad_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction"):
        triplet_ranking_loss(np.eye(2), np.eye(2), reduction="median")
