"""Run in a fresh process: one SGD step with rate-multiplier groups under MirroredStrategy
over 2 logical CPUs, against the step computed by hand in float64.

A linear model ``x -> backbone (Dense 4) -> projection (Dense 2)``, mean squared error over
the global batch of 8 (4 rows a replica); the backbone's kernel learns at 0.1 times the rate,
its bias at 0.5 times, the projection at the rate. Prints one JSON line: for every variable
the largest difference from the reference and the largest step.
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

from vse_tf.model.optimizer import ScaledRate  # noqa: E402

RATE = 0.5
MULTIPLIERS = {"backbone/kernel": 0.1, "backbone/bias": 0.5}


class ScaledRateSGD(ScaledRate, keras.optimizers.SGD):
    pass


def reference_gradients(weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """d/dw of mean((x W1 + b1) W2 + b2 - y)^2, in float64."""
    w1, b1, w2, b2 = (
        np.float64(weights[k]) for k in ("backbone/kernel", "backbone/bias", "projection/kernel", "projection/bias")
    )
    hidden = x @ w1 + b1
    d_out = 2.0 * (hidden @ w2 + b2 - y) / y.size
    d_hidden = d_out @ w2.T
    return {
        "backbone/kernel": x.T @ d_hidden,
        "backbone/bias": d_hidden.sum(axis=0),
        "projection/kernel": hidden.T @ d_out,
        "projection/bias": d_out.sum(axis=0),
    }


def main() -> int:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input(shape=(3,))
        outputs = keras.layers.Dense(2, name="projection")(keras.layers.Dense(4, name="backbone")(inputs))
        model = keras.Model(inputs, outputs)
        groups = {}
        for variable in model.trainable_variables:
            if variable.path in MULTIPLIERS:
                groups.setdefault(MULTIPLIERS[variable.path], []).append(variable)
        model.compile(optimizer=ScaledRateSGD(learning_rate=RATE, rate_multipliers=groups), loss="mse")
    before = {v.path: np.array(v, dtype=np.float64) for v in model.trainable_variables}
    gradients = reference_gradients(before, np.float64(x), np.float64(y))
    model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
    report = {"replicas": strategy.num_replicas_in_sync, "variables": {}}
    for variable in model.trainable_variables:
        step = RATE * MULTIPLIERS.get(variable.path, 1.0) * gradients[variable.path]
        want = before[variable.path] - step
        report["variables"][variable.path] = {
            "max_error": float(np.max(np.abs(np.array(variable, dtype=np.float64) - want))),
            "max_step": float(np.max(np.abs(step))),
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
