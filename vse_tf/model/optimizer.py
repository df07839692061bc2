"""The optimizer: Adam with a step or cosine schedule, global-norm clipping and a slower rate for pretrained weights."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.model.distribution import replica_clipnorm


@keras.saving.register_keras_serializable(package="vse_tf")
class ScaledRateAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied for some variables (pretrained weights being fine-tuned).

    Scaling the gradient would not do: Adam's step does not depend on the gradient's scale.
    On TensorFlow each variable's update is TensorFlow's fused Adam kernel
    (``ResourceApplyAdam``): Keras Adam's formula, in one pass over the variable and its two
    moments instead of about ten separate element-wise ops (about a tenth of a VSE++-sized
    training step on a CPU).

    Args:
        scaled_variables: the variables that learn at ``learning_rate * multiplier``.
        multiplier: the factor, in (0, 1] for a pretrained part.
        **kwargs: as for ``keras.optimizers.Adam``.
    """

    def __init__(self, *args, scaled_variables: Sequence = (), multiplier: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._scaled_ids = {id(variable) for variable in scaled_variables}
        self.multiplier = float(multiplier)

    def build(self, variables):
        super().build(variables)
        self._multipliers = [self.multiplier if id(variable) in self._scaled_ids else 1.0 for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        if self.amsgrad or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        return self._fused_update_step(gradient, variable, learning_rate)

    def _fused_update_step(self, gradient, variable, learning_rate):
        """``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
        ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``: Keras Adam's update, fused."""
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(tf.constant(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.constant(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.constant(self.beta_1, dtype),
            beta2=tf.constant(self.beta_2, dtype),
            epsilon=tf.constant(self.epsilon, dtype),
            grad=tf.convert_to_tensor(tf.cast(gradient, dtype)),  # a word embedding's sparse rows made dense
        )

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier}


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras or TensorFlow variable (under a distribution strategy's
    update, the current device's copy)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


def build_optimizer(
    config: ExperimentConfig, steps_per_epoch: int, num_replicas: int = 1, pretrained_variables: Sequence = ()
) -> keras.optimizers.Optimizer:
    """Adam with the configured schedule and global-norm gradient clipping (loss-scaled when mixed precision).

    ``pretrained_variables`` (the text tower's trainable pretrained weights, see
    :func:`vse_tf.text.towers.pretrained_variables`) learn at
    ``text.pretrained_learning_rate_multiplier`` times the rate.
    """
    train = config.train
    optimizer = ScaledRateAdam(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        global_clipnorm=replica_clipnorm(train.grad_clip_norm, num_replicas),
        scaled_variables=pretrained_variables,
        multiplier=config.text.pretrained_learning_rate_multiplier,
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
