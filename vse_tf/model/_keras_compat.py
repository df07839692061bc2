"""Every place vse_tf works around a Keras internal, in one module (Keras 3.15, TF backend).

Each workaround names what it works around; ``tests/model/test_keras_compat.py`` fails
when Keras changes the internal it relies on, so an upgrade shows here first.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class BuildsWithoutData:
    """Mixin for a ``keras.Model`` whose layers are built at construction (functional towers).

    Keras' TF trainer builds a model under a strategy by reducing a first data batch
    across replicas (``TensorFlowTrainer._maybe_symbolic_build``); under
    MultiWorkerMirroredStrategy that reduction fails for dict batches of strings and
    ints. The towers need no data to build; only the optimizer's slots are missing.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def reducible_log(value: tf.Tensor, strategy: tf.distribute.Strategy) -> tf.Tensor:
    """A scalar log value in the shape Keras can reduce under ``strategy``.

    Keras reduces multi-worker logs with ``strategy.reduce("MEAN", v, axis=0)``
    (``keras.src.backend.tensorflow.trainer.reduce_per_replica``), which a scalar lacks;
    one element along that axis reduces back to the scalar.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return tf.reshape(value, [1])
    return value


def set_initial_epoch(model: keras.Model, epoch: int) -> None:
    """Makes the running ``model.fit`` start at ``epoch`` (from ``on_train_begin``).

    The hook Keras' own ``BackupAndRestore`` uses: ``fit`` reads ``model._initial_epoch``
    after the callbacks' ``on_train_begin``.
    """
    model._initial_epoch = epoch
