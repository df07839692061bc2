"""A non-finite loss, a kill at each moment of the epoch commit, restarts that are another run.

The in-process tests stand in for a kill with an exception raised at the moment (a real
SIGKILL leaves temporaries behind, so one is planted by hand); the slow test kills real
``train.fit`` processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_config, write_tiny_karpathy

from vse_tf.data.skips import SkipLog
from vse_tf.training import callbacks
from vse_tf.training.checkpoints import read_record
from vse_tf.training.resume import RunMismatchError
from vse_tf.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]
KILLED_AT = ROOT / "tests" / "scripts" / "train_killed_at.py"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the library catches it."""


def raise_killed(*args, **kwargs):
    raise Killed


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a ``.weights.h5`` file under ``layers/`` (the model's weights), by path."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle["layers"].visititems(
            lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def assert_same_weights(actual: Path, expected: Path, atol: float) -> None:
    actual_arrays, expected_arrays = h5_arrays(actual), h5_arrays(expected)
    assert actual_arrays.keys() == expected_arrays.keys() and actual_arrays
    for name, array in expected_arrays.items():
        np.testing.assert_allclose(actual_arrays[name], array, atol=atol, rtol=0, err_msg=name)


def assert_same_history(actual: dict, expected: dict, atol: float) -> None:
    assert actual.keys() == expected.keys()
    for key, values in expected.items():
        np.testing.assert_allclose(np.array(actual[key], float), np.array(values, float), atol=atol, err_msg=key)


def test_a_nan_loss_ends_training_without_validating_or_checkpointing_those_weights(tiny_dataset, tmp_path, capsys):
    # The learning rate is 1e-2 * nan**(epoch - 1): epoch 1 trains, epoch 2's first step makes the weights NaN.
    config = tiny_config(tiny_dataset, tmp_path / "run", epochs=3, lr_decay_epochs=1)
    # A run that diverges: config validation refuses a nan factor, so it is planted past it.
    object.__setattr__(config.train, "lr_decay_factor", float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 2, batch 2"):
        train(config)
    out = capsys.readouterr().out
    assert "epoch 1/3" in out and "epoch 2/3" not in out  # epoch 2 was not validated
    run_dir = tmp_path / "run"
    best = read_record(run_dir / "checkpoints" / "best.weights.h5")
    assert best["epoch"] == 1
    assert json.loads((run_dir / "checkpoints" / "best.weights.h5.json").read_text()) == best
    arrays = h5_arrays(run_dir / "checkpoints" / "best.weights.h5")
    assert all(np.isfinite(array).all() for array in arrays.values())
    assert read_record(run_dir / "backup" / "latest.weights.h5")["epoch"] == 1  # the last good epoch
    assert_same_weights(run_dir / "backup" / "latest.weights.h5", run_dir / "checkpoints" / "best.weights.h5", 0)
    assert len(json.loads((run_dir / "history.json").read_text())["val_rsum"]) == 1
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["finished"] is False and "loss became nan" in summary["stopped"]


def test_a_kill_between_the_commit_and_the_best_checkpoint_then_restarts(tiny_dataset, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    config = tiny_config(tiny_dataset, run_dir, epochs=1)
    with monkeypatch.context() as patch:
        patch.setattr(callbacks.BestCheckpoint, "save", raise_killed)
        with pytest.raises(Killed):
            train(config, verbose=0)
    backup = run_dir / "backup" / "latest.weights.h5"
    assert read_record(backup)["epoch"] == 1 and not (run_dir / "checkpoints" / "best.weights.h5").exists()
    stale = run_dir / "checkpoints" / ".partial-99-0badc0de-best.weights.h5"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    committed = tmp_path / "committed.weights.h5"
    committed.write_bytes(backup.read_bytes())

    other = dataclasses.replace(config, train=dataclasses.replace(config.train, learning_rate=0.02))
    with pytest.raises(RunMismatchError, match=r"train\.learning_rate 0\.01 -> 0\.02") as refused:
        train(other, verbose=0)
    assert "\n" not in str(refused.value) and "--fresh" in str(refused.value)
    assert backup.exists()

    capsys.readouterr()
    run = train(config)  # the backup covers the last epoch: nothing to train, the best is rebuilt from it
    out = capsys.readouterr().out
    assert "best checkpoint rewritten from the backup (epoch 1)" in out and "epoch 1/1" not in out
    assert_same_weights(run_dir / "checkpoints" / "best.weights.h5", committed, 0)
    assert read_record(run_dir / "checkpoints" / "best.weights.h5")["epoch"] == 1
    assert not stale.exists() and not backup.parent.exists()
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["finished"] and summary["optimizer_steps"] == summary["steps_per_epoch"] == 32 // 8
    assert int(run.model.optimizer.iterations.numpy()) == 4

    written = (run_dir / "checkpoints" / "best.weights.h5").stat().st_mtime_ns
    train(config)  # finished: recognised, nothing trained or rewritten
    assert "training finished already" in capsys.readouterr().out
    assert (run_dir / "checkpoints" / "best.weights.h5").stat().st_mtime_ns == written

    dataset = tiny_dataset / "dataset_tiny.json"
    document = json.loads(dataset.read_text())
    first_train = next(image for image in document["images"] if image["split"] == "train")
    first_train["sentences"][0]["raw"] += " zebra"
    dataset.write_text(json.dumps(document))
    with pytest.raises(RunMismatchError, match="vocabulary"):
        train(config, verbose=0)
    train(config, verbose=0, fresh=True)
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["finished"] and summary["resumed_from_epoch"] == 0
    assert "zebra" in (run_dir / "vocabulary.txt").read_text().split()


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_runs_epochs(tiny_dataset, tmp_path, monkeypatch):
    reference = tiny_config(tiny_dataset, tmp_path / "reference", epochs=2)
    train(reference, verbose=0)
    config = tiny_config(tiny_dataset, tmp_path / "run", epochs=2)
    original = callbacks.StopOnNaN.on_train_batch_end
    steps = []

    def killed_at_step_6(self, batch, logs=None):  # epoch 2, batch 2
        original(self, batch, logs)
        steps.append(batch)
        if len(steps) == 6:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(callbacks.StopOnNaN, "on_train_batch_end", killed_at_step_6)
        with pytest.raises(Killed):
            train(config, verbose=0)
    assert read_record(tmp_path / "run" / "backup" / "latest.weights.h5")["epoch"] == 1
    train(config, verbose=0)
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["optimizer_steps"] == 2 * 4
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 2  # both epochs, though the last process trained one
    assert_same_history(history, json.loads((tmp_path / "reference" / "history.json").read_text()), atol=1e-6)
    assert_same_weights(
        tmp_path / "run" / "checkpoints" / "best.weights.h5",
        tmp_path / "reference" / "checkpoints" / "best.weights.h5",
        atol=1e-6,
    )


# Moments that kill within the first epoch a process trains (see tests/scripts/train_killed_at.py).
MOMENTS = ("batch", "validation", "backup_write", "before_best", "best_write", "best_copy")


def fit_process(moment: str, config: Path, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-u", str(KILLED_AT), moment, "--config", str(config), "--verbose", "1"]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkills_at_every_moment_end_with_the_uninterrupted_run(tmp_path):
    """Seven SIGKILLs (every moment once, in random order, then one after training); each
    process costs a TensorFlow start-up, so CI runs seven: ``VSE_TF_EXTRA_KILLS=3`` adds
    random ones (ten in all, as run when this was built)."""
    data = tmp_path / "data"
    write_tiny_karpathy(data, {"train": 32, "val": 8, "test": 10})
    epochs = 8
    for name in ("reference", "run"):
        tiny_config(data, tmp_path / name, epochs=epochs, deterministic_ops=True).save(tmp_path / f"{name}.json")
    reference = fit_process("none", tmp_path / "reference.json", tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]

    rng = random.Random(16)
    # every moment once, extra ones at random, in random order; at most one epoch committed each
    moments = [*MOMENTS, *rng.choices(MOMENTS, k=int(os.environ.get("VSE_TF_EXTRA_KILLS", "0")))]
    rng.shuffle(moments)
    moments = [f"batch:{rng.randint(1, 4)}" if moment == "batch" else moment for moment in moments]
    backup = tmp_path / "run" / "backup" / "latest.weights.h5"
    for moment in [*moments, "finish"]:
        result = fit_process(moment, tmp_path / "run.json", tmp_path)
        assert result.returncode == -9, f"{moment}: {result.returncode} {result.stderr[-3000:]}"
    final = fit_process("none", tmp_path / "run.json", tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming from the backup after epoch 8" in final.stdout  # the kill at "finish" lost nothing

    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["finished"] and summary["optimizer_steps"] == epochs * 32 // 8
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_rsum"]) == epochs
    assert_same_history(history, json.loads((tmp_path / "reference" / "history.json").read_text()), atol=1e-6)
    assert_same_weights(
        tmp_path / "run" / "checkpoints" / "best.weights.h5",
        tmp_path / "reference" / "checkpoints" / "best.weights.h5",
        atol=1e-6,
    )
    assert not backup.parent.exists() and not list((tmp_path / "run").rglob(".partial-*"))


def test_a_validation_image_tensorflow_cannot_decode_leaves_once_counted_not_every_epoch(
    tiny_dataset, tmp_path, monkeypatch
):
    """Screening passed it (here: it is broken after screening); validation must not crash on it."""
    from vse_tf.training import trainer

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a signature and no chunks: TensorFlow refuses it
    real_load_splits = trainer.load_splits

    def load_with_a_broken_val_image(config, names, skips):
        splits = real_load_splits(config, names, skips)
        val = splits["val"]
        splits["val"] = dataclasses.replace(val, image_refs=(str(broken),) + val.image_refs[1:])
        return splits

    monkeypatch.setattr(trainer, "load_splits", load_with_a_broken_val_image)
    run = train(tiny_config(tiny_dataset, tmp_path / "run"), verbose=0)
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    val = real_load_splits(run.config, ("val",), SkipLog())["val"]
    captions_of_first = sum(1 for image in val.caption_to_image if image == 0)
    assert skipped["skipped"]["decode_failed"] == captions_of_first
    assert any(str(broken) in example for example in skipped["files"]["decode_failed"])
    assert len(history["val_rsum"]) == 2  # both epochs validated, on the 7 images left
