"""One process of the multi-worker test: ``multiworker.py OUT.npz single`` or
``multiworker.py OUT.npz worker INDEX PORT0 PORT1``.

Trains the same tiny dual encoder on the same global batches, either alone or as one of
two MultiWorkerMirroredStrategy workers on 127.0.0.1, and saves the final weights.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if sys.argv[2] == "worker":
    index, ports = int(sys.argv[3]), sys.argv[4:]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from vse_tf.config import ExperimentConfig, ImageTowerConfig, TextTowerConfig  # noqa: E402
from vse_tf.model.distribution import replica_clipnorm  # noqa: E402
from vse_tf.model.dual_encoder import build_dual_encoder  # noqa: E402

GLOBAL_BATCH, STEPS = 8, 4
CONFIG = ExperimentConfig(
    embed_dim=8,
    image=ImageTowerConfig(backbone="features", feature_dim=6),
    text=TextTowerConfig(max_length=5, word_dim=4, gru_units=8),
)
VOCABULARY = [f"w{i}" for i in range(7)]


def global_batches() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(STEPS * GLOBAL_BATCH, 6)).astype(np.float32),
        "tokens": rng.integers(0, 9, size=(STEPS * GLOBAL_BATCH, 5)).astype(np.int64),
        "image_id": np.arange(STEPS * GLOBAL_BATCH, dtype=np.int64),
    }


def deterministic_weights(model: keras.Model) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in model.get_weights()]


def main() -> int:
    out, role = sys.argv[1], sys.argv[2]
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if role == "worker" else tf.distribute.get_strategy()
    data = global_batches()
    with strategy.scope():
        model = build_dual_encoder(CONFIG, VOCABULARY)
        model.set_weights(deterministic_weights(model))
        clip = replica_clipnorm(0.5, strategy.num_replicas_in_sync)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5, global_clipnorm=clip))
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(GLOBAL_BATCH)
    if role == "worker":
        # DATA sharding of the rebatched dataset: worker w takes the w-th half of every
        # global batch, so a step sees the same global batch as the single process.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    history = model.fit(dataset, epochs=1, steps_per_epoch=STEPS, shuffle=False, verbose=0)
    np.savez(out, *model.get_weights(), loss=np.array(history.history["loss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
