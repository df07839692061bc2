"""Run in a fresh process: the label-carrying pairwise losses on one device vs 2 logical CPUs.

For the ``loss.kind`` given as argument, finegrained (siamese text vectors) or category
(category ids), prints one JSON line: the training loss and weights after 3 SGD steps of
each run. One kind per process: two MirroredStrategy runs of different step graphs in one
process abort on mismatched collective instances.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from vse_tf.config import ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig  # noqa: E402
from vse_tf.model.dual_encoder import build_dual_encoder  # noqa: E402

GLOBAL_BATCH, STEPS = 8, 3
VOCABULARY = [f"w{i}" for i in range(7)]


def batches() -> dict:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(STEPS * GLOBAL_BATCH, 4)).astype(np.float32)
    ids = np.arange(STEPS * GLOBAL_BATCH, dtype=np.int64)
    ids[1] = ids[0]
    return {
        "image": rng.normal(size=(STEPS * GLOBAL_BATCH, 6)).astype(np.float32) * 5,
        "tokens": rng.integers(0, 9, size=(STEPS * GLOBAL_BATCH, 5)).astype(np.int64),
        "image_id": ids,
        "text_vector": vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        # three categories: rows on the other replica share categories with this one's
        "category_id": (ids % 3).astype(np.int64),
    }


def train(strategy, config, initial):
    with strategy.scope():
        model = build_dual_encoder(config, VOCABULARY)
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    dataset = tf.data.Dataset.from_tensor_slices(batches()).batch(GLOBAL_BATCH)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return history.history["loss"][-1], model.get_weights()


def compare(kind: str) -> dict:
    config = ExperimentConfig(
        embed_dim=8,
        image=ImageTowerConfig(backbone="features", feature_dim=6),
        text=TextTowerConfig(max_length=5, word_dim=4, gru_units=8),
        loss=LossConfig(kind=kind, text_vectors="unused"),
    )
    initial = build_dual_encoder(config, VOCABULARY).get_weights()
    one_loss, one_weights = train(tf.distribute.get_strategy(), config, initial)
    two_loss, two_weights = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), config, initial)
    return {
        "loss": [one_loss, two_loss],
        "weights_moved": max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, initial)),
        "weights_max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights)),
    }


def main() -> int:
    print(json.dumps(compare(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
