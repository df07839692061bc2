"""Distribution strategies, mixed precision, XLA, NaN handling and resuming a killed run."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.config import ExperimentConfig, ImageTowerConfig, TextTowerConfig, TrainConfig
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.training.callbacks import BestCheckpoint, StopOnNaN

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def run_script(*args, timeout=300):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_two_replicas_give_the_one_device_loss_and_update():
    report = json.loads(run_script(SCRIPTS / "replicas_match_one_device.py").strip().splitlines()[-1])
    # triplet: sum / max violation x no clip / active clip; infonce; siglip; two with gradient caching
    assert len(report) == 8
    for case, result in report.items():
        one, two = result["train_loss"]
        assert two == pytest.approx(one, rel=1e-5), case  # not multiplied by the 2 replicas
        assert result["eval_loss"][1] == pytest.approx(result["eval_loss"][0], rel=1e-5), case
        assert result["weights_moved"] > 1e-3, case
        assert result["weights_max_diff"] <= 1e-5 * max(1.0, result["weights_moved"]), case


@pytest.mark.slow
def test_two_workers_on_localhost_match_one_process(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPTS / "multiworker.py"),
                str(tmp_path / f"w{i}.npz"),
                "worker",
                str(i),
                *map(str, ports),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    run_script(SCRIPTS / "multiworker.py", tmp_path / "single.npz", "single")
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr.decode()[-3000:]
    single, first, second = (np.load(tmp_path / name) for name in ("single.npz", "w0.npz", "w1.npz"))
    for key in single.files:
        np.testing.assert_allclose(first[key], single[key], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(second[key], first[key], rtol=1e-6, atol=1e-6)


def features_config(**train) -> ExperimentConfig:
    return ExperimentConfig(
        embed_dim=8,
        image=ImageTowerConfig(backbone="features", feature_dim=6),
        text=TextTowerConfig(max_length=5, word_dim=4, gru_units=8),
        train=TrainConfig(learning_rate=1e-2, lr_decay_epochs=0, **train),
    )


def feature_batches(steps=4, batch=8, nan=False):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(steps * batch, 6)).astype(np.float32)
    if nan:
        images[batch * 2 + 3, 0] = np.nan
    data = {
        "image": images,
        "tokens": rng.integers(0, 9, size=(steps * batch, 5)).astype(np.int64),
        "image_id": np.arange(steps * batch, dtype=np.int64),
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(batch)


def fit_features(config, dataset, callbacks=()):
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, [f"w{i}" for i in range(7)])
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4), jit_compile=config.train.jit_compile)
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0, callbacks=list(callbacks))
    return model, history.history["loss"]


def test_xla_compiled_step_matches_the_plain_one():
    plain, plain_loss = fit_features(features_config(), feature_batches())
    compiled, compiled_loss = fit_features(features_config(jit_compile=True), feature_batches())
    np.testing.assert_allclose(compiled_loss, plain_loss, rtol=1e-4)
    for a, b in zip(compiled.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_mixed_precision_keeps_float32_weights_loss_and_embeddings():
    reference = build_dual_encoder(features_config(), [f"w{i}" for i in range(7)])
    reference.compile(optimizer=build_optimizer(features_config(), steps_per_epoch=4))
    config = features_config(mixed_precision=True)
    model = build_dual_encoder(config, [f"w{i}" for i in range(7)])
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4))
    model.set_weights(reference.get_weights())
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.image_encoder.get_layer("projection").compute_dtype == "float16"
    assert all(weight.dtype == "float32" for weight in model.weights)
    assert model.image_encoder(np.zeros((2, 6), np.float32)).dtype == "float32"
    # same weights: float16 compute changes the loss only by rounding
    assert model.evaluate(feature_batches(), verbose=0) == pytest.approx(
        reference.evaluate(feature_batches(), verbose=0), rel=1e-2
    )
    history = model.fit(feature_batches(), epochs=10, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_nan_loss_stops_training_and_names_the_step(capsys):
    stop = StopOnNaN()
    model, _ = fit_features(features_config(), feature_batches(nan=True), callbacks=[stop])
    assert "epoch 1, batch 3 (optimizer step 3)" in stop.message
    assert "epoch 1, batch 3" in capsys.readouterr().out
    assert int(model.optimizer.iterations.numpy()) == 3


def test_best_checkpoint_only_improves_across_restarts(tmp_path):
    model = build_dual_encoder(features_config(), ["a"])
    path = tmp_path / "best.weights.h5"
    first = BestCheckpoint(path)
    first.set_model(model)
    first.on_epoch_end(0, {"val_rsum": 100.0})
    written = path.stat().st_mtime_ns
    again = BestCheckpoint(path)  # a resumed run
    again.set_model(model)
    again.on_epoch_end(1, {"val_rsum": 90.0})
    assert path.stat().st_mtime_ns == written
    again.on_epoch_end(2, {"val_rsum": 120.0})
    assert json.loads((tmp_path / "best.weights.h5.json").read_text())["epoch"] == 3
    assert not list(tmp_path.glob(".partial*"))


def _wait_for(process, pattern, timeout=120):
    """Reads the child's stdout until a line contains ``pattern``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"process ended before printing {pattern!r}")
        if pattern in line:
            return line
    raise AssertionError(f"timed out waiting for {pattern!r}")
