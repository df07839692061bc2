"""Fine-grained labels: the pairwise similarity loss, the siamese network, DualEncoder wiring."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from vse_tf.config import LossConfig, SiameseConfig, with_overrides
from vse_tf.data.pipeline import category_table, training_dataset
from vse_tf.data.splits import load_split
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.losses import fine_grained_labels, pairwise_similarity_loss, same_category_labels
from vse_tf.model.optimizer import build_optimizer
from vse_tf.model.siamese import TextVectors, contrastive_loss, label_separation, sample_pairs, train_siamese
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.text.word_graph import initialize_word_graph
from vse_tf.training.run import restore_run
from vse_tf.training.trainer import fine_grained_text_vectors, train

ROOT = Path(__file__).resolve().parents[2]


def unit_rows(rng, rows, dim=5):
    values = rng.normal(size=(rows, dim)).astype(np.float32)
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def naive_pairwise(images, captions, labels, scale, offset):
    total = 0.0
    for i in range(len(images)):
        for c in range(len(captions)):
            logit = scale * (float(images[i] @ captions[c]) - offset)
            probability = 1.0 / (1.0 + np.exp(-logit))
            y = labels[i][c]
            # cross-entropy minus the target's entropy (0 for hard 0/1 labels)
            entropy = 0.0 if y in (0.0, 1.0) else -(y * np.log(y) + (1 - y) * np.log(1 - y))
            total += -(y * np.log(probability) + (1 - y) * np.log(1 - probability)) - entropy
    return total


def test_pairwise_loss_with_0_1_labels_is_the_binary_pairwise_loss():
    rng = np.random.default_rng(0)
    images, captions = unit_rows(rng, 6), unit_rows(rng, 6)
    ids = np.array([0, 0, 1, 2, 3, 4])
    binary = (ids[:, None] == ids[None, :]).astype(np.float32)
    default = pairwise_similarity_loss(images, captions, scale=4.0, offset=0.3, image_ids=ids)
    explicit = pairwise_similarity_loss(images, captions, labels=binary, scale=4.0, offset=0.3)
    want = naive_pairwise(images, captions, binary, 4.0, 0.3)
    assert float(default) == pytest.approx(want, rel=1e-5)
    assert float(explicit) == pytest.approx(want, rel=1e-5)
    # ... and the same as Keras' binary cross-entropy on the logits, summed over the B x B pairs
    logits = 4.0 * (images @ captions.T - 0.3)
    bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum")
    assert float(default) == pytest.approx(float(bce(binary.reshape(-1, 1), logits.reshape(-1, 1))), rel=1e-5)
    # fine-grained labels from text vectors that are one-hot per image are exactly 0/1 too
    one_hot = np.eye(5, dtype=np.float32)[ids]
    labels = fine_grained_labels(one_hot, ids).numpy()
    np.testing.assert_array_equal(labels, binary)
    assert float(pairwise_similarity_loss(images, captions, labels=labels, scale=4.0, offset=0.3)) == pytest.approx(
        want, rel=1e-5
    )


def test_pairwise_loss_with_soft_labels_matches_the_naive_loop_and_its_minimum():
    rng = np.random.default_rng(1)
    images, captions = unit_rows(rng, 5), unit_rows(rng, 5)
    labels = rng.uniform(0.05, 0.95, size=(5, 5)).astype(np.float32)
    loss = pairwise_similarity_loss(images, captions, labels=labels, scale=3.0, offset=0.1, reduction="mean")
    want = naive_pairwise(images, captions, labels, 3.0, 0.1)
    entropy = -(labels * np.log(labels) + (1 - labels) * np.log(1 - labels)).sum()
    assert float(loss) == pytest.approx((want + entropy) / 5, rel=1e-5)
    # d loss / d logit = sigmoid(logit) - label: zero when the logit equals the label's logit
    logits = tf.Variable(tf.zeros((5, 5)))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(tf.nn.softplus(logits) - labels * logits)
    np.testing.assert_allclose(tape.gradient(value, logits).numpy(), 0.5 - labels, atol=1e-6)


def test_fine_grained_labels_are_clipped_symmetric_similarities_with_positives_at_one():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [1.0, 0.0]], np.float32)
    labels = fine_grained_labels(vectors, image_ids=np.array([0, 1, 2, 2])).numpy()
    expected = np.array(
        [[1.0, 0.6, 0.0, 1.0], [0.6, 1.0, 0.0, 0.6], [0.0, 0.0, 1.0, 1.0], [1.0, 0.6, 1.0, 1.0]], np.float32
    )
    np.testing.assert_allclose(labels, expected, atol=1e-6)
    ids = np.array([0, 1, 2, 2])
    same_image = (ids[:, None] == ids[None, :]).astype(np.float32)
    half = fine_grained_labels(vectors, ids, strength=0.5).numpy()
    np.testing.assert_allclose(half, np.maximum(0.5 * expected, same_image), atol=1e-6)
    np.testing.assert_array_equal(fine_grained_labels(vectors, ids, strength=0.0).numpy(), same_image)


def test_contrastive_loss_and_pair_sampling():
    same = np.array([1.0, 0.0, 0.0])
    first = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    second = np.array([[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], np.float32)
    # (1 - .6)^2 = .16 ; max(0, .6 - .2)^2 = .16 ; max(0, 0 - .2)^2 = 0
    assert float(contrastive_loss(first, second, same, margin=0.2)) == pytest.approx(0.32 / 3, abs=1e-6)
    categories = ["a"] * 30 + ["b"] * 50 + ["c"] * 20
    first, second, same = sample_pairs(categories, epochs=4, positive_fraction=0.3, seed=0)
    labels = np.asarray(categories)
    assert len(first) == 400 and sorted(first[:100]) == list(range(100))
    np.testing.assert_array_equal(same, (labels[first] == labels[second]).astype(np.float32))
    assert 0.2 < same.mean() < 0.4


def test_text_vectors_round_trip_lookup_and_missing_texts(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    saved = TextVectors(["一个红色方块", "b", "c"], vectors, {"note": 1}).save(tmp_path / "v.npz")
    loaded = TextVectors.load(saved)
    assert loaded.texts == ("一个红色方块", "b", "c") and loaded.metadata == {"note": 1}
    np.testing.assert_array_equal(loaded.lookup(tf.constant(["c", "一个红色方块"])).numpy(), vectors[[2, 0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="no siamese vector"):
        loaded.lookup(tf.constant(["unknown"]))
    with pytest.raises(ValueError, match="v.npz: no siamese vector for 1 training text"):
        loaded.check_covers(["b", "d"], str(saved))
    with pytest.raises(FileNotFoundError, match="train.siamese"):
        TextVectors.load(tmp_path / "missing.npz")


def finegrained_config(tiny_dataset, tmp_path, **loss):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    return with_overrides(
        config,
        {
            "loss.kind": "finegrained",
            "loss.text_vectors": str(tmp_path / "siamese" / "vectors.npz"),
            "loss.pairwise_scale": 5.0,
            "siamese.embed_dim": 8,
            "siamese.epochs": 10,
            "text.encoder": "graph",
            "text.graph_neighbours": 3,
            "text.graph_channels": (4,),
            "siamese.batch_size": 16,
            "siamese.learning_rate": 1e-2,
            **loss,
        },
    )


def test_siamese_network_separates_categories_and_feeds_the_fine_grained_loss(tiny_dataset, tmp_path):
    config = finegrained_config(tiny_dataset, tmp_path)
    split = load_split(config, "train")
    result = train_siamese(config, split, verbose=0)
    assert result.history[-1] < 0.5 * result.history[0]
    categories = [split.categories[split.caption_to_image[split.captions.index(t)]] for t in result.text_vectors.texts]
    separation = label_separation(result.text_vectors.vectors, categories)
    assert separation["same_category_label"] > 0.8 > 0.2 > separation["different_category_label"]
    result.text_vectors.save(config.loss.text_vectors)

    text_vectors = fine_grained_text_vectors(config, split)
    vocabulary = build_vocabulary(split.captions)
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, vocabulary)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4))
    initialize_word_graph(model.text_encoder, split.captions, vocabulary)
    dataset = training_dataset(split, SentenceTokenizer(vocabulary, 8), config, text_vectors)
    batch = next(iter(dataset))
    assert batch["text_vector"].shape == (8, 8)
    before = model.evaluate(dataset, verbose=0)
    model.fit(dataset, epochs=8, shuffle=False, verbose=0)
    assert model.evaluate(dataset, verbose=0) < 0.5 * before
    # without the vectors the fine-grained loss names what is missing
    plain = training_dataset(split, SentenceTokenizer(vocabulary, 8), config)
    with pytest.raises(ValueError, match="needs batches with 'text_vector'"):
        model.evaluate(plain, verbose=0)


def test_loss_kind_is_in_the_config_and_the_model():
    with pytest.raises(ValueError, match="loss.kind must be one of"):
        LossConfig(kind="hinge")
    with pytest.raises(ValueError, match="positive_fraction"):
        SiameseConfig(positive_fraction=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["finegrained", "category"])
def test_fine_grained_and_category_labels_are_gathered_across_replicas(kind):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "finegrained_replicas.py"), kind],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    one, two = report["loss"]
    assert two == pytest.approx(one, rel=1e-5)
    assert report["weights_moved"] > 1e-3
    assert report["weights_max_diff"] <= 1e-5 * max(1.0, report["weights_moved"])


@pytest.mark.slow
def test_siamese_then_fit_from_the_command_line(tiny_dataset, tmp_path):
    """train.siamese writes the vectors; train.fit --loss.kind finegrained (graph text encoder) uses them."""
    vectors = tmp_path / "siamese" / "vectors.npz"
    common = [
        "--config",
        str(_write_config(tiny_dataset, tmp_path)),
        "--loss.text_vectors",
        str(vectors),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    siamese = subprocess.run(
        [sys.executable, "-m", "train.siamese", *common, "--verbose", "0"], capture_output=True, text=True, env=env
    )
    assert siamese.returncode == 0, siamese.stderr[-3000:]
    summary = json.loads(siamese.stdout.strip().splitlines()[-1])
    assert summary["texts"] == len(TextVectors.load(vectors).texts) > 0
    fit = subprocess.run(
        [sys.executable, "-m", "train.fit", *common, "--loss.kind", "finegrained", "--train.monitor", "val_mean_map"]
        + ["--verbose", "0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    best = json.loads((tmp_path / "run" / "checkpoints" / "best.weights.h5.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert best["monitor"] == "val_mean_map" and best["value"] == pytest.approx(max(history["val_mean_map"]))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 < metrics["i2t_map"] <= 1.0 and 0.0 < metrics["t2i_map"] <= 1.0
    run = restore_run(tmp_path / "run")  # the word graph comes back with the weights
    graph = run.model.text_encoder.get_layer("graph_convolution").graph_weights.numpy()
    np.testing.assert_allclose(graph.sum(axis=1), 1.0, atol=1e-5)


def _write_config(tiny_dataset, tmp_path):
    config = with_overrides(
        finegrained_config(tiny_dataset, tmp_path, **{"loss.kind": "triplet"}), {"siamese.epochs": 2}
    )
    path = tmp_path / "config.json"
    config.save(path)
    return path


def test_train_refuses_fine_grained_without_vectors(tiny_dataset, tmp_path):
    config = finegrained_config(tiny_dataset, tmp_path, **{"loss.text_vectors": ""})
    with pytest.raises(ValueError, match="needs loss.text_vectors"):
        train(config, verbose=0)


def test_category_labels_mark_every_same_category_pair():
    labels = same_category_labels(tf.constant([2, 0, 2, 1, 0], tf.int64)).numpy()
    expected = np.array([[a == b for b in (2, 0, 2, 1, 0)] for a in (2, 0, 2, 1, 0)], dtype=np.float32)
    np.testing.assert_array_equal(labels, expected)


def test_category_kind_trains_on_same_category_labels(tiny_dataset, tmp_path):
    config = with_overrides(tiny_config(tiny_dataset, tmp_path / "run"), {"loss.kind": "category"})
    split = load_split(config, "train")
    vocabulary = build_vocabulary(split.captions)
    dataset = training_dataset(split, SentenceTokenizer(vocabulary, 8), config)
    batch = next(iter(dataset))
    names = sorted(set(split.categories))
    category_of = {image_id: names.index(name) for image_id, name in zip(split.image_ids, split.categories)}
    assert batch["category_id"].numpy().tolist() == [category_of[int(i)] for i in batch["image_id"].numpy()]
    assert len(set(batch["category_id"].numpy().tolist())) < len(batch["category_id"])  # shared categories
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, vocabulary)
    embeddings = model(batch)
    arguments = (embeddings["image_embeddings"], embeddings["caption_embeddings"])
    by_category = pairwise_similarity_loss(*arguments, labels=same_category_labels(batch["category_id"]))
    by_image = pairwise_similarity_loss(*arguments, image_ids=batch["image_id"])
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4))
    single = tf.data.Dataset.from_tensors(batch)
    assert model.evaluate(single, verbose=0) == pytest.approx(float(by_category), rel=1e-5)
    assert float(by_category) != pytest.approx(float(by_image), rel=1e-3)


def test_category_kind_names_an_image_without_a_category(tiny_dataset, tmp_path):
    split = load_split(tiny_config(tiny_dataset, tmp_path / "run"), "train")
    unlabelled = dataclasses.replace(split, categories=("",) + split.categories[1:])
    with pytest.raises(ValueError, match="needs a category for every training image; .*" + split.image_refs[0][-12:]):
        category_table(unlabelled)
