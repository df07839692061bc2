"""Distribution helpers: the strategy, and gathering negatives and gradients across replicas."""

from __future__ import annotations

import tensorflow as tf


def gather_from_replicas(values: list[tf.Tensor]) -> list[tf.Tensor]:
    """``[B, ...]`` per replica -> ``[R * B, ...]`` in replica order; gradient through own rows only.

    Identity outside a multi-replica context. Every replica must hold the same ``B``
    (batches are dropped at the remainder, and the global batch divides by ``R``). The
    gathers run one after the other, after every input is computed: collectives must be
    issued in the same order on every replica (synchronized BatchNorm issues its own).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(values)
    gathered, previous = [], list(values)
    for value in values:
        with tf.control_dependencies(previous):
            everyone = context.all_gather(tf.stop_gradient(value), axis=0)
        rows = tf.shape(value)[0]
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
        gathered.append(tf.concat([everyone[:start], value, everyone[start + rows :]], axis=0))
        previous = [everyone]
    return gathered


def sum_over_replicas(gradients: list) -> list:
    """Dense gradients, summed over replicas and divided by R on every replica.

    Each replica's gradient covers its own rows of the global loss; their sum is the
    one-device gradient. Keras optimizers add the replicas' gradients up once more, so
    the update uses exactly that sum. Sparse (embedding) gradients go dense: replicas hold
    different numbers of rows, and a global-norm clip of ``IndexedSlices`` would count a
    word that occurs twice as two rows instead of one summed row.
    """
    dense = [None if gradient is None else tf.convert_to_tensor(gradient) for gradient in gradients]
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return dense
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
    replicas = float(context.num_replicas_in_sync)
    return [None if gradient is None else gradient / replicas for gradient in total]


def replica_clipnorm(clip_norm: float, num_replicas: int) -> float | None:
    """The per-replica global-norm clip that clips the summed gradient at ``clip_norm``.

    Keras clips on each replica before adding the replicas up; every replica holds the
    summed gradient divided by R (see :func:`sum_over_replicas`), and
    ``clip(g / R, c / R) == clip(g, c) / R``, so the update equals one device's.
    """
    return clip_norm / num_replicas if clip_norm > 0 else None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, else CPU) or ``multiworker`` (TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()
