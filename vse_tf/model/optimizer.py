"""The optimizer: Adam with step decay and global-norm clipping."""

from __future__ import annotations

import keras

from vse_tf.config import ExperimentConfig
from vse_tf.model.distribution import replica_clipnorm


def build_optimizer(
    config: ExperimentConfig, steps_per_epoch: int, num_replicas: int = 1
) -> keras.optimizers.Optimizer:
    """Adam with VSE++'s step decay and global-norm gradient clipping (loss-scaled when mixed precision)."""
    train = config.train
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = train.learning_rate
    if train.lr_decay_epochs > 0:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            train.learning_rate,
            decay_steps=max(1, train.lr_decay_epochs * steps_per_epoch),
            decay_rate=train.lr_decay_factor,
            staircase=True,
        )
    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate, global_clipnorm=replica_clipnorm(train.grad_clip_norm, num_replicas)
    )
    if train.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
