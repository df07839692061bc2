"""EfficientNet-Lite0: the Keras port against a PyTorch reference, on real photos.

The reference is written here from the packaged state_dict with torch.nn.functional (the
package ships weights only): TensorFlow "SAME" padding, batch norm eps 1e-3, ReLU6, no
squeeze-excite, residual when stride 1 and equal widths.
"""

import json

import keras
import numpy as np
import pytest
import skimage.data as skimage_data
import tensorflow as tf
import torch  # the [test] extra installs torch and scikit-image: these tests run in CI

from export.convert_weights import main as convert_main
from vse_tf.config import ExperimentConfig, ImageTowerConfig
from vse_tf.image.backbones import efficientnet_lite
from vse_tf.image.backbones.convert import packaged_lite0_state_dict, read_torch_state_dict
from vse_tf.image.towers import build_image_tower
from vse_tf.serving.export import write_serving_model
from vse_tf.serving.signatures import image_serving_model

functional = torch.nn.functional

# ImageNet class indices (no class-name file ships offline): 281 tabby, 282 tiger cat,
# 283 Persian, 284 Siamese, 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup.
CAT_CLASSES = {281, 282, 283, 284, 285}
COFFEE_CLASSES = {504, 967, 968}


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    """The packaged weights converted once per session, through the command line."""
    path = tmp_path_factory.mktemp("weights") / "efficientnet_lite0.weights.h5"
    assert convert_main(["efficientnet_lite0", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def classifier(lite0_weights):
    model = efficientnet_lite.build_efficientnet_lite0(include_top=True)
    model.load_weights(lite0_weights)
    return model


@pytest.fixture(scope="module")
def photos():
    """chelsea (a cat) and coffee (a cup of espresso), resized to 224, RGB 0..255."""
    images = [skimage_data.chelsea(), skimage_data.coffee()]
    resized = [tf.image.resize(image, [224, 224], antialias=True).numpy() for image in images]
    return np.round(np.stack(resized)).astype(np.float32)  # whole values, as decoded images have


def torch_lite0_logits(state_dict, pixels):
    """Reference forward pass: pixels ``[B, 224, 224, 3]`` 0..255 -> logits ``[B, 1000]``."""
    weights = {name: torch.from_numpy(value) for name, value in state_dict.items()}

    def conv(x, prefix, stride=1, groups=1):
        kernel = weights[f"{prefix}.weight"]
        size = x.shape[-1]
        pad = max((-(-size // stride) - 1) * stride + kernel.shape[-1] - size, 0)
        x = functional.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])  # TF "SAME"
        return functional.conv2d(x, kernel, stride=stride, groups=groups)

    def bn(x, prefix):
        return functional.batch_norm(
            x,
            weights[f"{prefix}.running_mean"],
            weights[f"{prefix}.running_var"],
            weights[f"{prefix}.weight"],
            weights[f"{prefix}.bias"],
            training=False,
            eps=1e-3,
        )

    x = torch.from_numpy(((pixels - 127.0) / 128.0).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        x = functional.relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
        for block in efficientnet_lite.lite0_blocks():
            prefix = f"_blocks.{block.index}"
            y = x
            if block.expand_ratio != 1:
                y = functional.relu6(bn(conv(y, f"{prefix}._expand_conv"), f"{prefix}._bn0"))
            y = conv(y, f"{prefix}._depthwise_conv", block.stride, groups=y.shape[1])
            y = functional.relu6(bn(y, f"{prefix}._bn1"))
            y = bn(conv(y, f"{prefix}._project_conv"), f"{prefix}._bn2")
            x = x + y if block.has_skip else y
        x = functional.relu6(bn(conv(x, "_conv_head"), "_bn1"))
        logits = functional.linear(x.mean(dim=(2, 3)), weights["_fc.weight"], weights["_fc.bias"])
    return logits.numpy()


def test_state_dict_fills_every_keras_weight_with_the_right_shapes():
    state_dict = read_torch_state_dict(packaged_lite0_state_dict())
    model = efficientnet_lite.build_efficientnet_lite0(include_top=True)
    copied = efficientnet_lite.load_state_dict(model, state_dict)
    assert copied == sum(value.size for value in state_dict.values()) == 4_694_024
    assert model.count_params() == copied  # nothing in the Keras model is left unset
    with pytest.raises(ValueError, match=r"_conv_stem: shapes .* do not fit Keras layer stem_conv"):
        efficientnet_lite.load_state_dict(model, {**state_dict, "_conv_stem.weight": np.zeros((16, 3, 3, 3))})
    with pytest.raises(KeyError, match="_blocks.15._bn2.running_var"):
        efficientnet_lite.load_state_dict(
            model, {k: v for k, v in state_dict.items() if k != "_blocks.15._bn2.running_var"}
        )


def test_keras_logits_match_the_torch_reference_to_1e4(classifier, photos):
    noise = np.random.default_rng(0).uniform(0, 255, size=(1, 224, 224, 3))
    pixels = np.concatenate([photos, noise]).astype(np.float32)
    expected = torch_lite0_logits(read_torch_state_dict(packaged_lite0_state_dict()), pixels)
    actual = classifier(pixels, training=False).numpy()
    assert np.abs(expected).max() > 5  # real logits, not a degenerate all-zero comparison
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_photos_get_the_classes_a_person_sees(classifier, photos):
    probabilities = tf.nn.softmax(classifier(photos.astype(np.float32), training=False)).numpy()
    cat, coffee = probabilities.argmax(axis=1)
    assert cat in CAT_CLASSES and coffee in COFFEE_CLASSES
    assert probabilities[0, sorted(CAT_CLASSES)].sum() > 0.5
    assert probabilities[1, sorted(COFFEE_CLASSES)].sum() > 0.5


def test_convert_command_refuses_bad_names(tmp_path, capsys):
    assert convert_main(["efficientnet_lite0", "--out", str(tmp_path / "lite0.h5")]) == 1
    assert "must end in .weights.h5" in capsys.readouterr().err
    missing = tmp_path / "missing.pth"
    assert convert_main(["efficientnet_lite0", "--out", str(tmp_path / "a.weights.h5"), "--state_dict", str(missing)])
    assert not (tmp_path / "a.weights.h5").exists()


def test_tower_uses_pretrained_pooled_features_and_exports(lite0_weights, classifier, photos, tmp_path):
    config = ImageTowerConfig(backbone="efficientnet_lite0", image_size=224, weights=str(lite0_weights))
    tower = build_image_tower(config, embed_dim=8)
    backbone = tower.get_layer("efficientnet_lite0_features")
    assert not backbone.trainable and backbone.output.shape[-1] == efficientnet_lite.FEATURE_DIM
    assert {weight.path.split("/")[0] for weight in tower.trainable_weights} == {"projection"}
    pooled = classifier.get_layer(efficientnet_lite.POOLED_LAYER).output
    features = keras.Model(tower.input, tower.get_layer("projection").input)
    expected = keras.Model(classifier.input, pooled)(photos, training=False).numpy()
    np.testing.assert_allclose(features(photos, training=False).numpy(), expected, atol=1e-5)
    assert (
        build_image_tower(ImageTowerConfig(**{**config.__dict__, "finetune": True}), 8)
        .get_layer("efficientnet_lite0_features")
        .trainable
    )

    experiment = ExperimentConfig(embed_dim=8, image=config)
    target = tmp_path / "image_encoder" / "1"
    write_serving_model(image_serving_model(tower, experiment), target, 1, {})
    reloaded = tf.saved_model.load(str(target))
    served = reloaded.signatures["pixels"](pixels=tf.constant(photos, tf.float32))["embeddings"].numpy()
    np.testing.assert_allclose(served, tower(photos, training=False).numpy(), atol=1e-5)
    card = json.loads((target / "assets.extra" / "model_card.json").read_text())
    assert card["custom_ops"] == []


def test_tower_resizes_other_sizes_and_round_trips_its_config():
    tower = build_image_tower(ImageTowerConfig(backbone="efficientnet_lite0", image_size=64), embed_dim=8)
    assert tower.get_layer("resize_224").output.shape[1:3] == (224, 224)
    clone = keras.Model.from_config(tower.get_config())
    clone.set_weights(tower.get_weights())
    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(clone(pixels).numpy(), tower(pixels).numpy(), atol=1e-6)
    assert [weight.path for weight in clone.trainable_weights] == ["projection/kernel", "projection/bias"]
