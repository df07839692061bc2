"""Run in a fresh process: one device vs MirroredStrategy over 2 logical CPUs.

The image tower is the ``features`` backbone: the small CNN's BatchNorm computes batch
statistics per replica, which is expected to differ from one device.

Prints one JSON line with the losses and the largest weight difference after one SGD step.
One step, from shared initial weights: the two runs differ only by the rounding of the
all-reduce (a few float32 ulps of the update). Over several steps of this large learning rate
that rounding is amplified by the dynamics (weights move by ~100), which says nothing about
the distribution and made a multi-step comparison fail now and then on a busy machine.
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

from vse_tf.config import ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig  # noqa: E402
from vse_tf.model.distribution import replica_clipnorm  # noqa: E402
from vse_tf.model.dual_encoder import build_dual_encoder  # noqa: E402

GLOBAL_BATCH, STEPS = 8, 1


def make_config(backbone: str, max_violation: bool, kind: str = "triplet", micro_batch: int = 0) -> ExperimentConfig:
    image = ImageTowerConfig(backbone=backbone, feature_dim=6, image_size=16, cnn_filters=(4,))
    return ExperimentConfig(
        embed_dim=8,
        image=image,
        text=TextTowerConfig(max_length=5, word_dim=4, gru_units=8),
        loss=LossConfig(kind=kind, max_violation=max_violation),
        train=TrainConfig(micro_batch=micro_batch),
    )


def batches(config: ExperimentConfig) -> list[dict]:
    rng = np.random.default_rng(0)
    shape = (config.image.feature_dim,) if config.image.backbone == "features" else (16, 16, 3)
    out = []
    for _ in range(STEPS):
        ids = rng.permutation(GLOBAL_BATCH).astype(np.int64)
        ids[1] = ids[0]  # two captions of one image in the batch: masked, not negatives
        out.append(
            {
                "image": rng.normal(size=(GLOBAL_BATCH, *shape)).astype(np.float32) * 5,
                "tokens": rng.integers(0, 9, size=(GLOBAL_BATCH, 5)).astype(np.int64),
                "image_id": ids,
            }
        )
    return out


def train(strategy, config, data, initial, clip):
    with strategy.scope():
        model = build_dual_encoder(config, [f"w{i}" for i in range(7)])
        model.set_weights(initial)
        replicas = strategy.num_replicas_in_sync
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.5, global_clipnorm=replica_clipnorm(clip, replicas))
        )
    evaluated = model.evaluate(tf.data.Dataset.from_tensors(data[0]), verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices({k: np.stack([b[k] for b in data]) for k in data[0]})
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return history.history["loss"][-1], evaluated, model.get_weights()


def main() -> int:
    report = {}
    # The triplet loss with and without max violation and clipping; CLIP's and SigLIP's losses
    # (mean over the global batch, learned scalars whose gradient every replica holds whole).
    cases = [("triplet", mv, clip, 0) for mv in (False, True) for clip in (0.0, 0.05)]
    cases += [("infonce", False, 0.0, 0), ("siglip", False, 0.0, 0)]
    # Gradient caching on two replicas (4 rows each) in micro-batches of 3 against one device
    # without it.
    cases += [("triplet", True, 0.0, 3), ("infonce", False, 0.0, 3)]
    # One strategy for every case: a new MirroredStrategy in the same process starts its
    # collective instance keys again, which collide with the previous model's when the
    # gradients' packed size differs (the learned scalars change it).
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for backbone in sys.argv[1:] or ("features",):
        for kind, max_violation, clip, micro_batch in cases:
            config = make_config(backbone, max_violation, kind)
            initial = build_dual_encoder(config, [f"w{i}" for i in range(7)]).get_weights()
            data = batches(config)
            one = train(tf.distribute.get_strategy(), config, data, initial, clip)
            two = train(mirrored, make_config(backbone, max_violation, kind, micro_batch), data, initial, clip)
            moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one[2], initial))
            report[f"{backbone}/{kind}/mv={max_violation}/clip={clip}/micro={micro_batch}"] = {
                "train_loss": [one[0], two[0]],
                "eval_loss": [one[1], two[1]],
                "weights_max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one[2], two[2])),
                "weights_moved": moved,
            }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
