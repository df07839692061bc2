"""TFRecord shards: written from any format, screened once, read back as the same records and batches."""

import collections
import dataclasses
import json

import numpy as np
import pytest
from conftest import tiny_config
from test_bad_input import write_bad_dataset

from export.shards import main as shards_main
from vse_tf.config import DataConfig
from vse_tf.data.pipeline import eval_image_batches, training_dataset
from vse_tf.data.readers.tfrecord import ShardedSplit, read_manifest
from vse_tf.data.shards import write_shards
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_splits
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.training.trainer import train


def on_shards(config, shard_dir):
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, format="tfrecord", data_dir=str(shard_dir))
    )


def pairs(split):
    """(image id, caption) multiset of a split: independent of how captions are ordered."""
    return collections.Counter((split.image_ids[i], c) for c, i in zip(split.captions, split.caption_to_image))


@pytest.fixture
def sharded(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    assert shards_main(["--data.data_dir", str(tiny_dataset), "--data.dataset", "tiny", "--out", str(tmp_path / "s"),
                        "--shard_records", "5"]) == 0  # fmt: skip
    return config, on_shards(config, tmp_path / "s")


def test_shards_hold_the_same_splits_and_stream_the_training_split(sharded, tmp_path):
    source_config, shard_config = sharded
    source = load_splits(source_config, ("train", "val", "test"), SkipLog())
    shards = load_splits(shard_config, ("train", "val", "test"), SkipLog())
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert [len(manifest["splits"][name]["shards"]) for name in ("train", "val", "test")] == [7, 2, 2]  # ceil(n / 5)
    assert isinstance(shards["train"], ShardedSplit)
    assert shards["train"].num_images == 32 and shards["train"].num_captions == 96
    assert shards["train"].image_ids == source["train"].image_ids  # round-robin shards read back in source order
    assert sorted(shards["train"].captions) == sorted(source["train"].captions)
    assert shards["train"].categories == source["train"].categories
    for name in ("val", "test"):
        assert shards[name].image_ids == source[name].image_ids
        assert shards[name].categories == source[name].categories
        assert pairs(shards[name]) == pairs(source[name])
    # the evaluation images come from the shards, pixel for pixel those decoded from the files
    val = shards["val"].head(5)
    from_shards = np.concatenate(list(eval_image_batches(val, "val", shard_config, batch_size=3)))
    from_files = np.concatenate(list(eval_image_batches(source["val"].head(5), "val", source_config, batch_size=3)))
    assert from_shards.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(from_shards, from_files)


@pytest.mark.parametrize("sampling", ["image", "caption"])
def test_training_batches_from_shards_equal_those_from_the_source(sharded, sampling):
    source_config, shard_config = (
        dataclasses.replace(c, train=dataclasses.replace(c.train, sampling=sampling)) for c in sharded
    )
    source = load_splits(source_config, ("train",), SkipLog())["train"]
    shards = load_splits(shard_config, ("train",), SkipLog())["train"]
    tokenizer = SentenceTokenizer(build_vocabulary(source.captions), 8)
    assert build_vocabulary(shards.captions) == build_vocabulary(source.captions)
    expected = list(training_dataset(source, tokenizer, source_config))
    for _ in range(2):  # two epochs: both reshuffle alike
        got = list(training_dataset(shards, tokenizer, shard_config))
        assert len(got) == len(expected) == (32 if sampling == "image" else 96) // 8
        for batch, reference in zip(got, expected):
            assert batch.keys() == reference.keys()
            for key in reference:
                np.testing.assert_array_equal(batch[key], reference[key])


def test_skip_report_is_written_once_with_the_counts_of_the_source(tmp_path):
    skipped, repaired = write_bad_dataset(tmp_path / "bad")
    config = tiny_config(tmp_path / "bad", tmp_path / "run")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, format="jsonl", test_fraction=0.0))
    write_shards(config, tmp_path / "s", shard_records=3)
    source_log, shard_log = SkipLog(), SkipLog()
    load_splits(config, ("train", "val"), source_log)
    splits = load_splits(on_shards(config, tmp_path / "s"), ("train", "val"), shard_log)
    assert dict(shard_log.skipped) == skipped and dict(shard_log.repaired) == repaired
    assert shard_log.to_dict() == source_log.to_dict()
    assert any("\ufffd" in caption for caption in splits["train"].captions)  # the repaired caption, stored repaired
    assert read_manifest(tmp_path / "s").splits["val"].num_images == 4


def test_feature_shards_hold_the_feature_rows(tmp_path):
    rng = np.random.default_rng(0)
    features = {split: rng.normal(size=(rows, 6)).astype(np.float32) for split, rows in [("train", 9), ("dev", 3)]}
    for split, array in features.items():
        np.save(tmp_path / f"{split}_ims.npy", array)
        (tmp_path / f"{split}_caps.txt").write_text("".join(f"{split} row {i // 2}\n" for i in range(2 * len(array))))
    config = tiny_config(tmp_path, tmp_path / "run")
    config = dataclasses.replace(
        config,
        data=DataConfig(data_dir=str(tmp_path), format="precomp", test_fraction=0.0),
        image=dataclasses.replace(config.image, backbone="features", feature_dim=6),
    )
    write_shards(config, tmp_path / "s", shard_records=4)
    shard_config = on_shards(config, tmp_path / "s")
    val = load_splits(shard_config, ("val",), SkipLog())["val"]
    rows = np.concatenate(list(eval_image_batches(val, "val", shard_config)))
    np.testing.assert_array_equal(rows, features["dev"])
    assert val.captions[:2] == ("dev row 0", "dev row 0")
    train_split = load_splits(shard_config, ("train",), SkipLog())["train"]
    tokenizer = SentenceTokenizer(build_vocabulary(train_split.captions), 8)
    config4 = dataclasses.replace(shard_config, train=dataclasses.replace(shard_config.train, batch_size=3))
    images = np.concatenate([b["image"] for b in training_dataset(train_split, tokenizer, config4)])
    np.testing.assert_array_equal(np.sort(images, axis=0), np.sort(features["train"], axis=0))
    wrong = dataclasses.replace(shard_config, image=dataclasses.replace(shard_config.image, feature_dim=5))
    with pytest.raises(ValueError, match="features are 6 wide, image.feature_dim=5"):
        load_splits(wrong, ("val",), SkipLog())


def test_missing_manifest_is_named(tmp_path):
    config = on_shards(tiny_config(tmp_path, tmp_path / "run"), tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="nothing/manifest.json: no shard manifest"):
        load_splits(config, ("val",), SkipLog())


@pytest.mark.slow
def test_training_on_shards_gives_the_validation_metrics_of_the_source(sharded, tmp_path):
    source_config, shard_config = sharded
    histories = []
    for config, name in ((source_config, "a"), (shard_config, "b")):
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, run_dir=str(tmp_path / name), epochs=1)
        )
        train(config, verbose=0)
        histories.append(json.loads((tmp_path / name / "history.json").read_text()))
        skipped = json.loads((tmp_path / name / "skipped.json").read_text())
        assert skipped["skipped"] == {}
    assert histories[0].keys() == histories[1].keys() and "val_rsum" in histories[0]
    for key in histories[0]:
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-6, err_msg=key)
