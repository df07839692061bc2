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


# One value outside its range for every numeric field; the test below checks the table
# covers them all, so a new numeric field needs a range too.
OUT_OF_RANGE = {
    "embed_dim": 0,
    "data.val_fraction": -0.1,
    "data.test_fraction": 1.5,
    "data.max_image_pixels": 0,
    "data.cache_budget_mb": -1,
    "image.image_size": 8,
    "image.feature_dim": 0,
    "image.cnn_convs_per_stage": 0,
    "image.batchnorm_momentum": 1.0,
    "image.dropout": 1.0,
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


def test_zero_or_empty_filters_are_refused():
    for filters in ((), (4, 0)):
        with pytest.raises(ValueError, match="image.cnn_filters"):
            ImageTowerConfig(cnn_filters=filters)
