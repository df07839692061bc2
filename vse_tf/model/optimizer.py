"""The optimizer: Adam with step decay, global-norm clipping and a slower rate for pretrained weights."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from vse_tf.config import ExperimentConfig
from vse_tf.model.distribution import replica_clipnorm


@keras.saving.register_keras_serializable(package="vse_tf")
class ScaledRateAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied for some variables (pretrained weights being fine-tuned).

    Scaling the gradient would not do: Adam's step does not depend on the gradient's scale.

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
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier}


def build_optimizer(
    config: ExperimentConfig, steps_per_epoch: int, num_replicas: int = 1, pretrained_variables: Sequence = ()
) -> keras.optimizers.Optimizer:
    """Adam with VSE++'s step decay and global-norm gradient clipping (loss-scaled when mixed precision).

    ``pretrained_variables`` (the text tower's trainable pretrained weights, see
    :func:`vse_tf.text.towers.pretrained_variables`) learn at
    ``text.pretrained_learning_rate_multiplier`` times the rate.
    """
    train = config.train
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = train.learning_rate
    if train.lr_decay_epochs > 0:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            train.learning_rate,
            decay_steps=max(1, train.lr_decay_epochs * steps_per_epoch),
            decay_rate=train.lr_decay_factor,
            staircase=True,
        )
    optimizer = ScaledRateAdam(
        learning_rate=learning_rate,
        global_clipnorm=replica_clipnorm(train.grad_clip_norm, num_replicas),
        scaled_variables=pretrained_variables,
        multiplier=config.text.pretrained_learning_rate_multiplier,
    )
    if train.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
