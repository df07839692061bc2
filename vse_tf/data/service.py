"""Sending the training input to tf.data service workers (``data.service = "grpc://host:port"``).

The per-epoch pipeline up to the batch (read, decode, shuffle, caption draw, batch) runs on
the service's workers in ``distributed_epoch`` mode: the dispatcher hands each worker
pieces of the dataset's source (single shard files, or single images of the in-memory
layout), so an epoch visits every record once however many workers there are, and a
faster worker takes more pieces. Each worker's share ends with a short batch; the trainer
re-slices the workers' batches into full ones (``rebatch``) and tokenises them, so an epoch
drops only its global remainder. Each iteration of the distributed dataset is a new,
anonymous job; the trainer's ``repeat().take(steps)`` stays in the trainer.
"""

from __future__ import annotations

import tensorflow as tf

from vse_tf.config import DataConfig

PROCESSING_MODE = "distributed_epoch"


def distribute_to_service(dataset: tf.data.Dataset, data: DataConfig) -> tf.data.Dataset:
    """``dataset`` processed by the tf.data service at ``data.service`` (unchanged when empty)."""
    if not data.service:
        return dataset
    return dataset.apply(tf.data.experimental.service.distribute(processing_mode=PROCESSING_MODE, service=data.service))


def start_dispatcher(port: int = 0, work_dir: str = "") -> tf.data.experimental.service.DispatchServer:
    """A dispatcher on ``port`` (0: any free one); ``work_dir`` (shared storage) lets a restarted
    dispatcher recover its jobs. Its address is ``server.target``."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir)
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int = 0, worker_address: str = "") -> tf.data.experimental.service.WorkerServer:
    """A worker registered with ``dispatcher`` (``host:port``, no ``grpc://``); ``worker_address``
    (``host:port``) is how the trainers reach it (default ``localhost:<port>``)."""
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher.removeprefix("grpc://"), port=port, worker_address=worker_address or None
    )
    return tf.data.experimental.service.WorkerServer(config)
