"""The optimizer: Adam with a step or cosine learning-rate schedule and global-norm clipping."""

from __future__ import annotations

import keras

from vse_tf.config import ExperimentConfig
from vse_tf.model.distribution import replica_clipnorm


def build_optimizer(
    config: ExperimentConfig, steps_per_epoch: int, num_replicas: int = 1
) -> keras.optimizers.Optimizer:
    """Adam with VSE++'s step decay and global-norm gradient clipping (loss-scaled when mixed precision)."""
    train = config.train
    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        global_clipnorm=replica_clipnorm(train.grad_clip_norm, num_replicas),
    )
    if train.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def learning_rate_schedule(
    config: ExperimentConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``train.lr_schedule``: ``step`` (VSE++: times ``lr_decay_factor`` every
    ``lr_decay_epochs``; constant when that is 0) or ``cosine`` (from ``learning_rate`` to 0
    over ``epochs``, after ``lr_warmup_epochs`` of linear warm-up)."""
    train = config.train
    if train.lr_schedule == "cosine":
        warmup_steps = train.lr_warmup_epochs * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup_steps else train.learning_rate,
            decay_steps=max(1, train.epochs * steps_per_epoch - warmup_steps),
            warmup_target=train.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if train.lr_decay_epochs > 0:
        return keras.optimizers.schedules.ExponentialDecay(
            train.learning_rate,
            decay_steps=max(1, train.lr_decay_epochs * steps_per_epoch),
            decay_rate=train.lr_decay_factor,
            staircase=True,
        )
    return train.learning_rate
