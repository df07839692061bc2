import dataclasses
import math

import pytest

from vse_tf.config import ExperimentConfig, TrainConfig
from vse_tf.model.optimizer import learning_rate_schedule


def config(**train):
    return dataclasses.replace(ExperimentConfig(), train=TrainConfig(**train))


@pytest.mark.parametrize("step", [0, 1, 37, 50, 99, 100])
def test_cosine_schedule_follows_the_half_cosine_to_zero(step):
    schedule = learning_rate_schedule(config(learning_rate=2e-3, lr_schedule="cosine", epochs=10), steps_per_epoch=10)
    want = 2e-3 * 0.5 * (1 + math.cos(math.pi * min(step, 100) / 100))
    assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_cosine_warm_up_rises_linearly_then_decays():
    schedule = learning_rate_schedule(
        config(learning_rate=1e-3, lr_schedule="cosine", lr_warmup_epochs=1, epochs=3), steps_per_epoch=10
    )
    assert float(schedule(5)) == pytest.approx(0.5e-3, rel=1e-5)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-5)
    assert float(schedule(20)) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 10 / 20)), rel=1e-5)


def test_step_schedule_is_vsepp_decay_and_constant_without_it():
    schedule = learning_rate_schedule(config(learning_rate=2e-4, lr_decay_epochs=15, lr_decay_factor=0.1), 10)
    assert float(schedule(149)) == pytest.approx(2e-4) and float(schedule(150)) == pytest.approx(2e-5)
    assert learning_rate_schedule(config(learning_rate=2e-4, lr_decay_epochs=0), 10) == 2e-4


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="train.lr_schedule"):
        TrainConfig(lr_schedule="linear")
