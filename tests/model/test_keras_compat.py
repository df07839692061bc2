"""Each workaround in vse_tf.model._keras_compat still matches the Keras internal it relies on."""

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

from vse_tf.model._keras_compat import BuildsWithoutData, reducible_log, set_initial_epoch


def test_keras_still_builds_distributed_models_through_maybe_symbolic_build():
    hook = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    assert list(inspect.signature(hook).parameters) == ["self", "iterator", "data_batch"]
    assert list(inspect.signature(BuildsWithoutData._maybe_symbolic_build).parameters) == [
        "self",
        "iterator",
        "data_batch",
    ]
    # fit calls the hook with the data iterator; the override must be what fit reaches.
    assert "_maybe_symbolic_build(iterator=" in inspect.getsource(tf_trainer.TensorFlowTrainer.fit)


def test_keras_still_reduces_multi_worker_logs_with_a_mean_over_axis_0():
    source = inspect.getsource(tf_trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in source
    value = tf.constant(2.5)
    assert reducible_log(value, tf.distribute.get_strategy()) is value


def test_set_initial_epoch_makes_fit_start_there():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    epochs_run = []

    class StartAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            set_initial_epoch(self.model, 2)

        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

    x = np.ones((4, 2), np.float32)
    model.fit(x, np.ones((4, 1), np.float32), epochs=4, verbose=0, callbacks=[StartAtTwo()])
    assert epochs_run == [2, 3]
