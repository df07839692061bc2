"""The optimizer: Adam with a step or cosine schedule, global-norm clipping and slower rates for pretrained weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.model.distribution import replica_clipnorm


class ScaledRate:
    """Mixin for a Keras optimizer: chosen variables learn at a multiple of its learning rate.

    ``class ScaledRateAdam(ScaledRate, keras.optimizers.Adam)``. The multiple is applied to the
    rate inside ``update_step``, so it holds for any update rule (scaling the gradient would not
    do: Adam's step does not depend on the gradient's scale) and under ``tf.distribute``
    (``update_step`` then sees each replica's copy of a variable, looked up by the one the
    optimizer was built with).

    Args:
        rate_multipliers: multiplier -> the variables that learn at ``learning_rate * multiplier``
            (pretrained weights being fine-tuned); every other variable learns at the rate. A
            variable listed under two different multipliers is refused.
        *args, **kwargs: as for the optimizer.

    The groups hold variables, which a config cannot: ``get_config`` has none of them.
    """

    def __init__(self, *args, rate_multipliers: Mapping[float, Sequence] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._rate_multipliers: dict[int, float] = {}
        for multiplier, variables in (rate_multipliers or {}).items():
            multiplier = float(multiplier)
            if not (math.isfinite(multiplier) and multiplier > 0.0):
                raise ValueError(f"a learning-rate multiplier must be a positive number, got {multiplier!r}")
            for variable in variables:
                known = self._rate_multipliers.setdefault(id(variable), multiplier)
                if known != multiplier:
                    raise ValueError(
                        f"{variable.path} is given two learning-rate multipliers, {known} and {multiplier}"
                    )

    def build(self, variables):
        super().build(variables)
        self._multipliers = [self._rate_multipliers.get(id(variable), 1.0) for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)


class FusedAdam(keras.optimizers.Adam):
    """Keras Adam whose update on TensorFlow is the fused ``ResourceApplyAdam`` kernel.

    Keras Adam's formula in one pass over the variable and its two moments instead of about
    ten separate element-wise ops (about a tenth of a VSE++-sized training step on a CPU).
    AMSGrad and other backends keep Keras' own step.
    """

    def update_step(self, gradient, variable, learning_rate):
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


@keras.saving.register_keras_serializable(package="vse_tf")
class ScaledRateAdam(ScaledRate, FusedAdam):
    """:class:`FusedAdam` whose learning rate is multiplied for some variables (:class:`ScaledRate`)."""


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras or TensorFlow variable (under a distribution strategy's
    update, the current device's copy)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


def build_optimizer(
    config: ExperimentConfig,
    steps_per_epoch: int,
    num_replicas: int = 1,
    pretrained_variables: Sequence = (),
    backbone_variables: Sequence = (),
) -> keras.optimizers.Optimizer:
    """Adam with the configured schedule and global-norm gradient clipping (loss-scaled when mixed precision).

    Two groups learn at a multiple of the rate (:class:`ScaledRateAdam`):
    ``pretrained_variables``, the text tower's trainable pretrained weights (see
    :func:`vse_tf.text.towers.pretrained_variables`), at
    ``text.pretrained_learning_rate_multiplier``, and ``backbone_variables``, the image
    tower's trainable backbone weights (:func:`vse_tf.image.towers.backbone_variables`), at
    ``image.pretrained_learning_rate_multiplier``. Every other variable learns at the rate.
    """
    train = config.train
    groups: dict[float, list] = {}
    groups.setdefault(config.text.pretrained_learning_rate_multiplier, []).extend(pretrained_variables)
    groups.setdefault(config.image.pretrained_learning_rate_multiplier, []).extend(backbone_variables)
    optimizer = ScaledRateAdam(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        global_clipnorm=replica_clipnorm(train.grad_clip_norm, num_replicas),
        rate_multipliers=groups,
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
