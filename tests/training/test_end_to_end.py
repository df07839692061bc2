"""The command-line path a user takes: generate data, train, evaluate, export, reload."""

import json
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import naive_recall_at_1

from export.export import main as export_main
from export.projector import main as projector_main
from train.evaluate import main as evaluate_main
from train.evaluate_annotation import main as annotation_main
from train.evaluate_arithmetic import main as arithmetic_main
from vse_tf.evaluation.encode import encode_split
from vse_tf.evaluation.metrics import METRIC_KEYS
from vse_tf.training.run import restore_run


def run(*args, cwd):
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def call(main, *args, capsys) -> str:
    """A command's ``main`` in this process (no second TensorFlow start-up); its stdout."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return captured.out


@pytest.mark.slow
def test_generate_train_export_from_the_command_line(tmp_path, capsys):
    """Data generation and training as subprocesses; the later commands' mains in this process."""
    data, run_dir, models = tmp_path / "shapes", tmp_path / "run", tmp_path / "models"
    out = run(
        "vse_tf.data.synthetic.shapes",
        "--out",
        str(data),
        "--train_images",
        "256",
        "--val_images",
        "32",
        "--test_images",
        "40",
        "--image_size",
        "32",
        cwd=tmp_path,
    )
    assert "ceiling" in out.lower()
    out = run(
        "train.fit",
        "--data.data_dir",
        str(data),
        "--train.run_dir",
        str(run_dir),
        "--embed_dim",
        "32",
        "--image.image_size",
        "32",
        "--image.cnn_filters",
        "8",
        "16",
        "--image.cnn_convs_per_stage",
        "1",
        "--text.gru_units",
        "32",
        "--text.word_dim",
        "16",
        "--train.epochs",
        "2",
        "--train.batch_size",
        "32",
        "--loss.warmup_epochs",
        "1",
        "--verbose",
        "0",
        cwd=tmp_path,
    )
    assert "image annotation (i->t)" in out and "image search (t->i)" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    encoded = encode_split(restore_run(run_dir), "test")
    naive = naive_recall_at_1(encoded.image_embeddings, encoded.caption_embeddings, encoded.split.caption_to_image)
    assert {key: metrics[key] for key in naive} == pytest.approx(naive)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["embed_dim"] == 32 and config["loss"]["warmup_epochs"] == 1
    out = call(
        evaluate_main,
        "--run",
        str(run_dir),
        "--protocol",
        "coco1k",
        "--map_at",
        "10",
        "--normalise",
        "qb",
        capsys=capsys,
    )
    assert "protocol coco1k" in out and "MAP@10" in out and "querybank-normalised" in out
    folded = json.loads((run_dir / "metrics_test_coco1k.json").read_text())
    assert set(metrics) <= set(folded) and "t2i_map_at_10" in folded
    assert {f"qb_{key}" for key in METRIC_KEYS} <= set(folded)
    assert (run_dir / "recall_test.png").exists()
    out = call(
        annotation_main,
        "--run",
        str(run_dir),
        "--from_split",
        "test",
        "--images",
        str(tmp_path / "classes"),
        capsys=capsys,
    )
    assert "top-1" in out and json.loads((run_dir / "corel.json").read_text())["images"] == 40
    out = call(arithmetic_main, "--run", str(run_dir), "--evaluate", capsys=capsys)
    swaps = json.loads((run_dir / "arithmetic_test.json").read_text())
    # A random other image holds a given (colour, shape) object about 2 / 48 of the time.
    assert 0 < swaps["colour_swap_chance"] < 20 and "shape" in out
    call(projector_main, "--run", str(run_dir), "--max_images", "10", capsys=capsys)
    assert (run_dir / "logs" / "projector" / "metadata.tsv").exists()
    out = call(export_main, "--run", str(run_dir), "--out", str(models), capsys=capsys)
    assert str(models / "text_encoder" / "1") in out
    text = tf.saved_model.load(str(models / "text_encoder" / "1")).signatures["serving_default"]
    assert text(sentences=tf.constant(["a big red circle above a small blue star"]))["embeddings"].shape == (1, 32)
    assert export_main(["--run", str(run_dir), "--out", str(models)]) == 1
    assert "exists already" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_small_dataset(tmp_path):
    out = run(
        "train.demo",
        "--data_dir", str(tmp_path / "shapes"),
        "--run_dir", str(tmp_path / "demo"),
        "--epochs", "1",
        "--train_images", "256",
        "--val_images", "20",
        "--test_images", "20",
        "--image_size", "32",
        cwd=tmp_path,
    )  # fmt: skip
    assert "image annotation (i->t)" in out and "ceiling R@1" in out and "category MAP" in out
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert {"i2t_r1", "t2i_r10", "rsum"} <= set(metrics)
    for name in ("image_encoder", "text_encoder"):
        assert (tmp_path / "demo" / "models" / name / "1" / "saved_model.pb").exists()
