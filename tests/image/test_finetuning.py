"""Fine-tuning the pretrained image backbones: image.trainable_layers and
image.pretrained_learning_rate_multiplier.

The EfficientNet-Lite0 towers take 32x32 pixels (resized to 224 inside) and keep random
weights: which variables train, and that a step follows multiplier x rate x gradient, do not
depend on the values.
"""

from __future__ import annotations

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
from conftest import tiny_config, write_tiny_karpathy

from vse_tf.config import BACKBONE_BLOCKS, ExperimentConfig, ImageTowerConfig, TextTowerConfig, TrainConfig
from vse_tf.image.towers import backbone_blocks, backbone_variables, build_image_tower
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import ScaledRate, build_optimizer
from vse_tf.training import trainer

LITE0 = "efficientnet_lite0_features"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ROOT = Path(__file__).resolve().parents[2]


def lite0_blocks_by_name() -> tuple[list[str], list[list[str]]]:
    """The stem's layers with weights and those of the 17 blocks, bottom to top, written out
    from the architecture: block 0 has no expansion (ratio 1), blocks 1..15 do; the head conv last."""
    stem = ["stem_conv", "stem_bn"]
    blocks = [["block0_dwconv", "block0_dwconv_bn", "block0_project_conv", "block0_project_bn"]]
    for index in range(1, 16):
        blocks.append(
            [
                f"block{index}_{part}"
                for part in ("expand_conv", "expand_bn", "dwconv", "dwconv_bn", "project_conv", "project_bn")
            ]
        )
    blocks.append(["head_conv", "head_bn"])
    return stem, blocks


def trainable_paths(layer_names: list[str]) -> set[str]:
    """A convolution trains its kernel (no bias), a BatchNorm its gamma and beta."""
    paths = set()
    for name in layer_names:
        paths |= {f"{name}/gamma", f"{name}/beta"} if name.endswith("_bn") else {f"{name}/kernel"}
    return paths


def lite0_tower(**fields) -> keras.Model:
    return build_image_tower(ImageTowerConfig(backbone="efficientnet_lite0", image_size=32, **fields), embed_dim=4)


class ScaledRateSGD(ScaledRate, keras.optimizers.SGD):
    """Plain SGD with the scaled groups: a step is exactly ``-rate * multiplier * gradient``."""


def test_the_block_counts_in_config_are_the_backbones():
    stem, blocks = lite0_blocks_by_name()
    backbone = lite0_tower().get_layer(LITE0)
    listed = backbone_blocks("efficientnet_lite0", backbone)
    assert len(listed) == BACKBONE_BLOCKS["efficientnet_lite0"] == len(blocks) == 17
    # every layer with weights is in exactly one block, or the stem
    with_weights = [[layer.name for layer in block if layer.weights] for block in listed]
    assert with_weights == blocks
    assert {layer.name for layer in backbone.layers if layer.weights} == set(stem).union(*blocks)


@pytest.mark.parametrize("trainable_layers", [0, 1, 2, 17, -1])
def test_trainable_layers_train_exactly_the_top_blocks_of_efficientnet_lite0(trainable_layers):
    stem, blocks = lite0_blocks_by_name()
    tower = lite0_tower(trainable_layers=trainable_layers)
    if trainable_layers == -1:
        expected = trainable_paths(stem + sum(blocks, []))
    else:
        expected = trainable_paths(sum(blocks[len(blocks) - trainable_layers :], []) if trainable_layers else [])
    assert {v.path for v in backbone_variables(tower)} == expected
    assert [v.path for v in tower.trainable_variables] == [v.path for v in backbone_variables(tower)] + [
        "projection/kernel",
        "projection/bias",
    ]
    if trainable_layers == -1:  # 49 convolutions, 49 BatchNorms with gamma and beta
        assert len(expected) == 49 + 2 * 49
    assert tower.get_layer(LITE0).trainable == (trainable_layers != 0)


def test_finetune_is_every_block_and_round_trips_the_tower():
    tower = lite0_tower(finetune=True)
    assert {v.path for v in backbone_variables(tower)} == {
        v.path for v in backbone_variables(lite0_tower(trainable_layers=-1))
    }
    partial = lite0_tower(trainable_layers=2)
    clone = keras.Model.from_config(partial.get_config())  # per-layer trainable flags survive
    assert [v.path for v in clone.trainable_variables] == [v.path for v in partial.trainable_variables]


def test_vgg19_blocks_are_its_conv_stages_then_fc1_and_fc2():
    tower = build_image_tower(ImageTowerConfig(backbone="vgg19", image_size=32, trainable_layers=3), embed_dim=4)
    stage5 = [f"block5_conv{i}" for i in range(1, 5)]
    expected = {f"{name}/{weight}" for name in [*stage5, "fc1", "fc2"] for weight in ("kernel", "bias")}
    assert {v.path for v in backbone_variables(tower)} == expected
    blocks = backbone_blocks("vgg19", tower.get_layer("vgg19_fc7"))
    assert [[layer.name for layer in block if layer.weights] for block in blocks] == [
        ["block1_conv1", "block1_conv2"],
        ["block2_conv1", "block2_conv2"],
        [f"block3_conv{i}" for i in range(1, 5)],
        [f"block4_conv{i}" for i in range(1, 5)],
        stage5,
        ["fc1"],
        ["fc2"],
    ]
    assert len(blocks) == BACKBONE_BLOCKS["vgg19"]


def test_one_sgd_step_moves_the_backbone_at_the_multiplier_and_freezes_the_other_batchnorms():
    rate, multiplier = 0.05, 0.25
    tower = lite0_tower(trainable_layers=2, pretrained_learning_rate_multiplier=multiplier)
    backbone = tower.get_layer(LITE0)
    scaled = backbone_variables(tower)
    optimizer = ScaledRateSGD(learning_rate=rate, rate_multipliers={multiplier: scaled})
    variables = tower.trainable_variables
    before = [np.array(v, dtype=np.float64) for v in variables]
    batchnorms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    statistics = {layer.name: [np.array(w) for w in layer.non_trainable_weights] for layer in batchnorms}

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    weights = tf.constant(rng.normal(size=(2, 4)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tower(pixels, training=True) * weights)
    gradients = tape.gradient(loss, variables)
    optimizer.apply(gradients, variables)

    scaled_paths = {v.path for v in scaled}
    assert len(scaled_paths) == 12 and len(variables) == 14
    for variable, old, gradient in zip(variables, before, gradients):
        factor = multiplier if variable.path in scaled_paths else 1.0
        assert factor == (0.25 if variable.path.startswith(("block15_", "head_")) else 1.0), variable.path
        gradient = np.array(gradient, dtype=np.float64)
        want = old - rate * factor * gradient  # float64, from the gradient
        np.testing.assert_allclose(np.array(variable), want, rtol=1e-6, atol=1e-7, err_msg=variable.path)
        if factor != 1.0 and np.abs(gradient).max() > 1e-3:  # the full rate would not fit
            assert not np.allclose(np.array(variable), old - rate * gradient, rtol=1e-6, atol=1e-7), variable.path

    # The two trainable blocks' BatchNorms used batch statistics and moved their averages;
    # every other one ran in inference mode and kept them.
    moved = set()
    for layer in batchnorms:
        if any(not np.array_equal(a, np.array(b)) for a, b in zip(statistics[layer.name], layer.non_trainable_weights)):
            moved.add(layer.name)
    assert moved == {"block15_expand_bn", "block15_dwconv_bn", "block15_project_bn", "head_bn"}


def test_a_fit_step_keeps_frozen_batchnorm_statistics_and_scales_both_groups():
    """One DualEncoder.fit step (the trainer's path: graph mode, build_optimizer's Adam)."""
    config = ExperimentConfig(
        embed_dim=4,
        image=ImageTowerConfig(
            backbone="efficientnet_lite0", image_size=32, trainable_layers=1, pretrained_learning_rate_multiplier=0.25
        ),
        text=TextTowerConfig(max_length=4, word_dim=4, gru_units=4),
        train=TrainConfig(learning_rate=1e-3, lr_decay_epochs=0, grad_clip_norm=0.0),
    )
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, ["a", "b", "c"])
    backbone = model.image_encoder.get_layer(LITE0)
    model.compile(optimizer=build_optimizer(config, 1, backbone_variables=backbone_variables(model.image_encoder)))
    before = {v.path: np.array(v) for v in model.trainable_variables}
    statistics = {
        layer.name: [np.array(w) for w in layer.non_trainable_weights]
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32),
        "tokens": rng.integers(1, 5, size=(4, 4)).astype(np.int64),
        "image_id": np.arange(4, dtype=np.int64),
    }
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)

    moved = {
        name
        for name, values in statistics.items()
        if any(
            not np.array_equal(a, np.array(b)) for a, b in zip(values, backbone.get_layer(name).non_trainable_weights)
        )
    }
    assert moved == {"head_bn"}
    # Adam's first step moves a weight whose gradient is well above epsilon by its rate.
    steps = {v.path: float(np.max(np.abs(np.array(v) - before[v.path]))) for v in model.trainable_variables}
    assert set(steps) >= {"head_conv/kernel", "projection/kernel"} and "block15_project_conv/kernel" not in steps
    assert steps["head_conv/kernel"] == pytest.approx(1e-3 * 0.25, rel=1e-2)
    assert steps["projection/kernel"] == pytest.approx(1e-3, rel=1e-2)


class OptimizerBuilt(Exception):
    pass


def test_the_trainer_gives_the_optimizer_the_backbone_variables(tmp_path, monkeypatch):
    write_tiny_karpathy(tmp_path / "data", {"train": 8, "val": 4, "test": 4})
    config = dataclasses.replace(
        tiny_config(tmp_path / "data", tmp_path / "run", epochs=1, grad_clip_norm=0.0),
        image=ImageTowerConfig(
            backbone="efficientnet_lite0", image_size=32, trainable_layers=1, pretrained_learning_rate_multiplier=0.3
        ),
    )
    calls = []

    def build_and_stop(*args, **kwargs):
        calls.append((args, kwargs, build_optimizer(*args, **kwargs)))
        raise OptimizerBuilt  # the rest of train() is not this test's

    monkeypatch.setattr(trainer, "build_optimizer", build_and_stop)
    with pytest.raises(OptimizerBuilt):
        trainer.train(config, verbose=0)
    ((args, kwargs, optimizer),) = calls
    text, image = args[3:] if len(args) > 3 else (kwargs["pretrained_variables"], kwargs["backbone_variables"])
    assert list(text) == [] and [v.path for v in image] == ["head_conv/kernel", "head_bn/gamma", "head_bn/beta"]
    # Adam's first step with a unit gradient: rate * 0.3 for the backbone weights.
    before = [np.array(v) for v in image]
    optimizer.apply([tf.ones_like(v) for v in image], image)
    for variable, old in zip(image, before):
        np.testing.assert_allclose(old - np.array(variable), 1e-2 * 0.3, rtol=1e-4, err_msg=variable.path)


def adam_first_step(gradient: np.ndarray, rate: float) -> np.ndarray:
    """Keras Adam's first update in float64: m = (1 - b1) g, v = (1 - b2) g^2,
    alpha = rate sqrt(1 - b2) / (1 - b1), step = alpha m / (sqrt(v) + eps)."""
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
    m, v = (1 - beta_1) * gradient, (1 - beta_2) * gradient**2
    alpha = rate * np.sqrt(1 - beta_2) / (1 - beta_1)
    return alpha * m / (np.sqrt(v) + epsilon)


@pytest.mark.parametrize("text_multiplier, image_multiplier", [(0.5, 0.25), (0.1, 0.1)])
def test_build_optimizer_gives_each_tower_its_own_multiplier(text_multiplier, image_multiplier):
    config = ExperimentConfig(
        image=ImageTowerConfig(pretrained_learning_rate_multiplier=image_multiplier),
        text=TextTowerConfig(pretrained_learning_rate_multiplier=text_multiplier),
        train=TrainConfig(learning_rate=1e-2, lr_decay_epochs=0, grad_clip_norm=0.0),
    )
    rng = np.random.default_rng(2)
    other, image, text = (
        [keras.Variable(rng.normal(size=(3, 2)), dtype="float32", name=f"{group}{i}") for i in range(2)]
        for group in ("other", "image", "text")
    )
    variables = [*other, *image, *text]
    optimizer = build_optimizer(config, 1, pretrained_variables=text, backbone_variables=image)
    before = [np.array(v, dtype=np.float64) for v in variables]
    gradients = [rng.normal(size=(3, 2)) * 10.0 ** rng.integers(-3, 2) for _ in variables]
    optimizer.apply([tf.constant(g, tf.float32) for g in gradients], variables)
    factors = [1.0, 1.0, image_multiplier, image_multiplier, text_multiplier, text_multiplier]
    for variable, old, gradient, factor in zip(variables, before, gradients, factors):
        gradient = np.float64(np.float32(gradient))
        want = old - adam_first_step(gradient, 1e-2 * factor)
        np.testing.assert_allclose(np.array(variable), want, rtol=1e-5, atol=1e-7, err_msg=variable.path)


def test_a_variable_in_two_groups_with_two_rates_is_refused():
    variable = keras.Variable(np.zeros(2), name="shared")
    config = ExperimentConfig(image=ImageTowerConfig(pretrained_learning_rate_multiplier=0.5))
    with pytest.raises(ValueError, match=r"shared is given two learning-rate multipliers, 0.1 and 0.5"):
        build_optimizer(config, 1, pretrained_variables=[variable], backbone_variables=[variable])
    with pytest.raises(ValueError, match="positive"):
        ScaledRateSGD(rate_multipliers={0.0: [variable]})


@pytest.mark.slow
def test_scaled_groups_under_mirrored_strategy_step_by_their_multipliers():
    """Two logical CPUs in a fresh process: the step of each group is multiplier * rate * the
    global batch's gradient, computed by hand in float64."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "scaled_rate_mirrored.py")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for name, case in report["variables"].items():
        assert case["max_error"] <= 1e-6 * max(1.0, case["max_step"]), name
        assert case["max_step"] > 1e-3, name  # the step is large enough to tell the rates apart
