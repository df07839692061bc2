"""The training input through a tf.data service: a dispatcher and two workers in this process on 127.0.0.1."""

import collections
import dataclasses
import json

import numpy as np
import pytest
from conftest import tiny_config

from vse_tf.data.pipeline import training_dataset
from vse_tf.data.service import start_dispatcher, start_worker
from vse_tf.data.shards import write_shards
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_splits
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.training.trainer import train


@pytest.fixture(scope="module")
def service():
    dispatcher = start_dispatcher()
    address = dispatcher.target.removeprefix("grpc://")
    workers = [start_worker(address) for _ in range(2)]
    yield dispatcher.target
    del workers  # stopping a worker waits for its heartbeat; the servers end with the process


def with_service(config, target, **data):
    return dataclasses.replace(config, data=dataclasses.replace(config.data, service=target, **data))


def test_an_epoch_through_two_workers_visits_every_caption_once(service, tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run", sampling="caption")
    write_shards(config, tmp_path / "s", shard_records=1)  # 32 pieces for the two workers, 3 captions each
    config = with_service(config, service, format="tfrecord", data_dir=str(tmp_path / "s"))
    split = load_splits(config, ("train",), SkipLog())["train"]
    source = load_splits(tiny_config(tiny_dataset, tmp_path / "run"), ("train",), SkipLog())["train"]
    tokenizer = SentenceTokenizer(build_vocabulary(source.captions), 8)
    batches = list(training_dataset(split, tokenizer, config))
    assert len(batches) == 96 // 8
    vocabulary = tokenizer.vocabulary  # ids: 0 padding, 1 OOV, words from 2
    seen = collections.Counter(
        (int(image_id), " ".join(vocabulary[t - 2] for t in tokens if t > 1))
        for batch in batches
        for image_id, tokens in zip(batch["image_id"].numpy(), batch["tokens"].numpy())
    )
    expected = collections.Counter(
        (source.image_ids[image], caption) for caption, image in zip(source.captions, source.caption_to_image)
    )
    assert seen == expected


def test_training_runs_through_the_service(service, tiny_dataset, tmp_path):
    config = with_service(tiny_config(tiny_dataset, tmp_path / "run", epochs=1), service)
    run = train(config, verbose=0)
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["optimizer_steps"] == 32 // 8
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(np.isfinite(history["loss"])) and "val_rsum" in history
    assert run.config.data.service == service
