import argparse
import json

import pytest

from train.flags import add_config_flags, config_from_flags
from vse_tf.config import ExperimentConfig, ImageTowerConfig, TrainConfig, flat_fields, with_overrides


def test_config_round_trips_through_json(tmp_path):
    config = ExperimentConfig(
        embed_dim=64,
        image=ImageTowerConfig(backbone="features", feature_dim=10, cnn_filters=(3, 5)),
        train=TrainConfig(epochs=3, learning_rate=0.5),
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
