import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from vse_tf.data.pipeline import training_dataset
from vse_tf.data.splits import load_split
from vse_tf.evaluation.encode import encode_split, evaluate_run
from vse_tf.evaluation.metrics import evaluate_retrieval
from vse_tf.model.dual_encoder import DualEncoder, build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.training.callbacks import HardestNegativeSchedule
from vse_tf.training.run import restore_run
from vse_tf.training.trainer import train


def tensorboard_tags(log_dir):
    tags = set()
    for path in log_dir.glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def make_model(config, vocabulary):
    model = build_dual_encoder(config, vocabulary)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4))
    return model


def test_fit_lowers_the_loss(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    split = load_split(config, "train")
    vocabulary = build_vocabulary(split.captions)
    tokenizer = SentenceTokenizer(vocabulary, config.text.max_length)
    keras.utils.set_random_seed(0)
    model = make_model(config, vocabulary)
    dataset = training_dataset(split, tokenizer, config)
    before = model.evaluate(dataset, verbose=0)
    model.fit(dataset, epochs=8, shuffle=False, verbose=0)
    after = model.evaluate(dataset, verbose=0)
    assert after < 0.5 * before


def test_max_violation_switch_changes_the_loss_without_new_model(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    split = load_split(config, "train")
    vocabulary = build_vocabulary(split.captions)
    model = make_model(config, vocabulary)
    dataset = training_dataset(split, SentenceTokenizer(vocabulary, config.text.max_length), config).take(1)
    schedule = HardestNegativeSchedule(max_violation=True, warmup_epochs=1)
    schedule.set_model(model)
    schedule.on_epoch_begin(0)
    summed = model.evaluate(dataset, verbose=0)
    schedule.on_epoch_begin(1)
    hardest = model.evaluate(dataset, verbose=0)
    assert float(model.max_violation.numpy()) == 1.0
    assert hardest < summed


def test_gradient_clipping_and_decay_come_from_config(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    optimizer = build_optimizer(config, steps_per_epoch=10)
    assert optimizer.global_clipnorm == pytest.approx(2.0)
    decayed = tiny_config(tiny_dataset, tmp_path / "run", lr_decay_epochs=3)
    schedule = build_optimizer(decayed, steps_per_epoch=10)._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    assert float(schedule(29)) == pytest.approx(1e-2)
    assert float(schedule(30)) == pytest.approx(1e-3)


def test_dual_encoder_config_round_trip(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    model = build_dual_encoder(config, ["a", "b"])
    clone = DualEncoder.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    inputs = {"image": np.random.rand(2, 16, 16, 3).astype("float32") * 255, "tokens": np.array([[2, 3] + [0] * 6] * 2)}
    for key, value in model(inputs).items():
        np.testing.assert_allclose(clone(inputs)[key].numpy(), value.numpy(), atol=1e-6)
    assert clone.margin == model.margin


def test_train_writes_a_complete_run_dir_and_restores(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    run = train(config, verbose=0)
    run_dir = tmp_path / "run"
    for name in ("config.json", "vocabulary.txt", "checkpoints/best.weights.h5", "history.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists()  # BackupAndRestore cleans up after a finished run
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 2 and len(history["val_rsum"]) == 2
    assert {"epoch_loss", "epoch_learning_rate"} <= tensorboard_tags(run_dir / "logs" / "train")
    assert {"epoch_rsum", "epoch_i2t_r1", "epoch_t2i_r10"} <= tensorboard_tags(run_dir / "logs" / "validation")
    restored = restore_run(run_dir)
    metrics = evaluate_run(restored, "test")
    assert metrics == evaluate_run(run, "test")
    assert {"i2t_map", "t2i_map"} <= set(metrics)  # the tiny set's images have categories
    encoded = encode_split(restored, "test")
    assert encoded.image_embeddings.shape == (10, 16)  # each distinct image encoded once
    assert encoded.caption_embeddings.shape == (30, 16)
    coco1k = evaluate_run(restored, "test", protocol="coco1k")
    folds = evaluate_retrieval(
        encoded.image_embeddings, encoded.caption_embeddings, encoded.split.caption_to_image, folds=5
    )
    assert {key: coco1k[key] for key in folds} == pytest.approx(folds)
    best = max(history["val_rsum"])
    assert evaluate_run(restored, "val")["rsum"] == pytest.approx(best)


@pytest.mark.slow
def test_train_under_mirrored_strategy_on_two_devices(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_mirrored.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # 32 training images, global batch 8: 4 steps, each split over the 2 replicas.
    assert report["summary"]["replicas"] == 2 and report["summary"]["optimizer_steps"] == 32 // 8
    assert {"i2t_r1", "t2i_r1", "rsum"} <= set(report["metrics"])
