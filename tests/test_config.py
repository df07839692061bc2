import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.flags import add_config_flags, config_from_flags, wants_diagnostics
from vse_tf.config import ExperimentConfig, ImageTowerConfig, TrainConfig, flat_fields, with_overrides


def test_config_round_trips_through_json(tmp_path):
    config = ExperimentConfig(
        embed_dim=64,
        image=ImageTowerConfig(backbone="features", feature_dim=10, cnn_filters=(3, 5)),
        train=TrainConfig(epochs=3, learning_rate=0.5, length_sort_window=4),
    )
    path = tmp_path / "config.json"
    config.save(path)
    assert ExperimentConfig.load(path) == config
    assert json.loads(path.read_text())["image"]["cnn_filters"] == [3, 5]


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match="train.*bogus"):
        ExperimentConfig.from_json(json.dumps({"train": {"bogus": 1}}))


def test_wrong_type_is_named():
    with pytest.raises(TypeError, match="train.epochs"):
        ExperimentConfig.from_json(json.dumps({"train": {"epochs": "ten"}}))


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="backbone"):
        ImageTowerConfig(backbone="resnet9000")
    with pytest.raises(ValueError, match="sampling"):
        TrainConfig(sampling="sometimes")


def test_with_overrides_replaces_dotted_fields():
    config = with_overrides(ExperimentConfig(), {"train.epochs": 7, "embed_dim": 32, "image.cnn_filters": (1, 2)})
    assert (config.train.epochs, config.embed_dim, config.image.cnn_filters) == (7, 32, (1, 2))
    with pytest.raises(ValueError, match="train.nope"):
        with_overrides(config, {"train.nope": 1})


def test_every_field_has_a_flag(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    base = tmp_path / "base.json"
    ExperimentConfig(embed_dim=48).save(base)
    args = parser.parse_args(
        [
            "--config",
            str(base),
            "--train.batch_size",
            "16",
            "--loss.max_violation",
            "false",
            "--image.cnn_filters",
            "4",
            "8",
        ]
    )
    config = config_from_flags(args)
    assert config.embed_dim == 48
    assert config.train.batch_size == 16
    assert config.loss.max_violation is False
    assert config.image.cnn_filters == (4, 8)
    flags = {action.dest for action in parser._actions}
    assert set(flat_fields(ExperimentConfig)) <= flags


def test_the_public_api_resolves_every_name_it_lists():
    import vse_tf

    for name in vse_tf.__all__:
        assert getattr(vse_tf, name) is not None, name
    assert vse_tf.train.__module__ == "vse_tf.training.trainer"


# One value outside its range for every numeric field; the test below checks the table
# covers them all, so a new numeric field needs a range too.
OUT_OF_RANGE = {
    "embed_dim": 0,
    "train.micro_batch": -1,
    "data.val_fraction": -0.1,
    "data.test_fraction": 1.5,
    "data.max_image_pixels": 0,
    "data.cache_budget_mb": -1,
    "image.image_size": 8,
    "image.feature_dim": 0,
    "image.cnn_convs_per_stage": 0,
    "image.batchnorm_momentum": 1.0,
    "image.dropout": 1.0,
    "image.trainable_layers": -2,
    "image.pretrained_learning_rate_multiplier": 0.0,
    "text.max_length": 0,
    "text.min_word_count": 0,
    "text.word_dim": 0,
    "text.gru_units": 0,
    "text.graph_neighbours": 0,
    "text.pretrained_layers": -1,
    "text.trainable_layers": -2,
    "text.pretrained_learning_rate_multiplier": 0.0,
    "text.vocabulary_from_word_vectors": -2,
    "loss.margin": -0.1,
    "loss.warmup_epochs": -1,
    "loss.pairwise_scale": 0.0,
    "loss.pairwise_offset": 2.0,
    "loss.finegrained_strength": 1.5,
    "loss.temperature": 0.0,
    "loss.max_logit_scale": 0.5,
    "loss.siglip_scale": -1.0,
    "loss.siglip_bias": float("nan"),
    "train.epochs": 0,
    "train.batch_size": 1,
    "train.learning_rate": 0.0,
    "train.lr_decay_epochs": -1,
    "train.lr_decay_factor": 0.0,
    "train.lr_warmup_epochs": -1,
    "train.grad_clip_norm": -1.0,
    "train.seed": -1,
    "train.validation_max_images": 0,
    "train.shuffle_buffer": 0,
    "train.length_sort_window": -1,
    "siamese.embed_dim": 0,
    "siamese.epochs": 0,
    "siamese.batch_size": 1,
    "siamese.learning_rate": -1.0,
    "siamese.margin": 1.5,
    "siamese.positive_fraction": 1.0,
}


def test_every_numeric_field_has_a_range():
    numeric = {name for name, hint in flat_fields(ExperimentConfig).items() if hint in (int, float)}
    assert numeric == set(OUT_OF_RANGE)


@pytest.mark.parametrize("name, value", sorted(OUT_OF_RANGE.items()))
def test_a_value_out_of_range_is_refused_in_one_line_naming_the_field(name, value):
    with pytest.raises(ValueError) as error:
        with_overrides(ExperimentConfig(), {name: value})
    message = str(error.value)
    assert name in message and "\n" not in message, message


def test_image_fine_tuning_fields_round_trip_and_finetune_means_every_block(tmp_path):
    config = ExperimentConfig(
        image=ImageTowerConfig(backbone="vgg19", trainable_layers=3, pretrained_learning_rate_multiplier=0.25)
    )
    config.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())["image"]
    assert (saved["trainable_layers"], saved["pretrained_learning_rate_multiplier"]) == (3, 0.25)
    assert ExperimentConfig.load(tmp_path / "config.json") == config
    assert config.image.backbone_trainable_layers == 3
    # A config written before the two fields existed: finetune alone trains every block.
    older = {"image": {"backbone": "efficientnet_lite0", "finetune": True}}
    image = ExperimentConfig.from_json(json.dumps(older)).image
    assert (image.trainable_layers, image.backbone_trainable_layers, image.pretrained_learning_rate_multiplier) == (
        0,
        -1,
        0.1,
    )
    assert ImageTowerConfig(backbone="vgg19", finetune=True, trainable_layers=-1).backbone_trainable_layers == -1
    assert ImageTowerConfig(backbone="efficientnet_lite0", trainable_layers=17).backbone_trainable_layers == 17


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"backbone": "vgg19", "finetune": True, "trainable_layers": 2},
            "image.finetune=true trains the whole backbone but image.trainable_layers=2 only its top blocks: "
            "set one of them",
        ),
        (
            {"backbone": "efficientnet_lite0", "trainable_layers": 18},
            "image.trainable_layers must be <= 17 for efficientnet_lite0 (its blocks; -1: all), got 18",
        ),
        ({"backbone": "vgg19", "trainable_layers": 8}, "image.trainable_layers must be <= 7 for vgg19"),
        (
            {"backbone": "small_cnn", "trainable_layers": -1},
            "image.trainable_layers works with the pretrained backbones ('vgg19', 'efficientnet_lite0'), "
            "got image.backbone='small_cnn'",
        ),
        ({"backbone": "features", "trainable_layers": 1}, "got image.backbone='features'"),
        (
            {"pretrained_learning_rate_multiplier": 1.5},
            "image.pretrained_learning_rate_multiplier must be in (0.0, 1.0]",
        ),
    ],
)
def test_contradictory_image_fine_tuning_fields_are_refused_in_one_line(fields, message):
    with pytest.raises(ValueError) as error:
        ImageTowerConfig(**fields)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_zero_or_empty_filters_are_refused():
    for filters in ((), (4, 0)):
        with pytest.raises(ValueError, match="image.cnn_filters"):
            ImageTowerConfig(cnn_filters=filters)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--train.epochs", "0"], "error: train.epochs must be >= 1, got 0"),
        (["--embed_dim", "0"], "error: embed_dim must be >= 1, got 0"),
        (["--train.shuffle_buffer", "0"], "error: train.shuffle_buffer must be >= 1, got 0"),
        (["--train.validation_max_images", "0"], "error: train.validation_max_images must be >= 1, got 0"),
        (["--train.batch_size", "-4"], "error: train.batch_size must be >= 2 (negatives come from the batch), got -4"),
    ],
)
def test_fit_refuses_a_bad_value_in_one_line(tmp_path, capsys, flags, message):
    from train.fit import main

    assert main([*flags, "--train.run_dir", str(tmp_path / "run")]) == 1
    assert one_error_line(capsys) == message
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_fit_names_the_file_and_the_unknown_key(tmp_path, capsys):
    from train.fit import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"bogus": 1}}))
    assert main(["--config", str(path)]) == 1
    assert one_error_line(capsys) == f"error: {path}: not a valid ExperimentConfig: train.: unknown field(s) ['bogus']"


def test_fit_names_a_wrong_features_folder(tmp_path, capsys):
    from train.fit import main

    (tmp_path / "features").mkdir()
    np.save(tmp_path / "features" / "test_ims.npy", np.zeros([2, 4], np.float32))
    flags = ["--image.backbone", "features", "--data.features_dir", str(tmp_path / "features")]
    assert main([*flags, "--train.run_dir", str(tmp_path / "run")]) == 1
    assert one_error_line(capsys) == (
        f"error: data.features_dir='{tmp_path / 'features'}': no train_ims.npy "
        "(it holds ['test_ims.npy']; python -m train.features writes them)"
    )


def test_verbose_gives_the_traceback_back():
    from train.fit import main

    with pytest.raises(ValueError, match="train.epochs must be >= 1"):
        main(["--train.epochs", "0", "--verbose"])
    assert wants_diagnostics(["--verbose"]) and wants_diagnostics(["--verbose", "2"])
    assert wants_diagnostics(["--verbose=3", "--x"]) and wants_diagnostics(["--verbose", "--train.epochs", "1"])
    assert not wants_diagnostics(["--verbose", "1"]) and not wants_diagnostics(["--verbose=0"])
    assert not wants_diagnostics(["--train.epochs", "2"])


@pytest.mark.slow  # a fresh process imports TensorFlow: 8 to 20 s
def test_a_command_prints_one_line_without_tensorflow_start_up_noise(tmp_path):
    """A fresh process: TensorFlow's C++ start-up lines (oneDNN, CUDA probing) do not reach stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--run", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'nothing' / 'config.json'}: no config; is {tmp_path / 'nothing'} a training run directory?"
    ]


@pytest.mark.parametrize(
    "module, function, argv, message",
    [
        ("export.export", "main", ["--run", "{tmp}/none", "--out", "{tmp}/m"], "{tmp}/none/config.json: no config"),
        ("export.projector", "main", ["--run", "{tmp}/none"], "{tmp}/none/config.json: no config"),
        ("export.retrieval", "main", ["--image_index", "{tmp}/none", "--out", "{tmp}/m"], "{tmp}/none"),
        ("export.index", "main", ["--update", "{tmp}/none"], "{tmp}/none"),
        ("export.shards", "main", ["--data.data_dir", "{tmp}/none", "--out", "{tmp}/s"], "{tmp}/none"),
        (
            "export.convert_weights",
            "main",
            ["efficientnet_lite0", "--out", "{tmp}/x.weights.h5", "--state_dict", "{tmp}/no.pth"],
            "{tmp}/no.pth",
        ),
        ("train.features", "main", ["--images", "{tmp}/none", "--out", "{tmp}/f"], "{tmp}/none"),
        ("export.search", "search_main", ["a red block", "--index", "{tmp}/none"], "{tmp}/none"),
    ],
)
def test_every_command_refuses_in_one_line_naming_the_path(tmp_path, capsys, module, function, argv, message):
    import importlib

    main = getattr(importlib.import_module(module), function)
    try:
        status = main([argument.format(tmp=tmp_path) for argument in argv])
    except SystemExit as exit:  # argparse's parser.error: a usage line and the error line
        status = exit.code
        lines = capsys.readouterr().err.splitlines()
        assert lines[0].startswith("usage:") and message.format(tmp=tmp_path) in lines[-1], lines
        assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), lines
    else:
        assert message.format(tmp=tmp_path) in one_error_line(capsys)
    assert status not in (0, None)
