import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from vse_tf.data.pipeline import decode_and_resize, eval_caption_batches, eval_image_batches, training_dataset
from vse_tf.data.splits import load_split
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary


@pytest.fixture
def setup(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    split = load_split(config, "train")
    tokenizer = SentenceTokenizer(build_vocabulary(split.captions), config.text.max_length)
    return config, split, tokenizer


def test_image_sampling_visits_every_image_once_with_one_of_its_captions(setup):
    config, split, tokenizer = setup
    batches = list(training_dataset(split, tokenizer, config))
    assert len(batches) == split.num_images // config.train.batch_size
    batch = batches[0]
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == tf.float32
    assert batch["tokens"].dtype == tf.int64
    for b in batches:  # padded to the batch's longest caption: its last column holds a word
        tokens = b["tokens"].numpy()
        assert tokens.shape[0] == 8 and tokens.shape[1] <= config.text.max_length
        assert np.any(tokens[:, -1] != 0)
    ids = np.concatenate([b["image_id"].numpy() for b in batches])
    assert sorted(ids) == sorted(split.image_ids)
    # the caption drawn belongs to the image
    words = {image_id: set() for image_id in split.image_ids}
    for caption, owner in zip(split.captions, split.caption_to_image):
        words[split.image_ids[owner]].update(tokenizer(tf.constant([caption])).numpy()[0])
    for b in batches:
        for image_id, tokens in zip(b["image_id"].numpy(), b["tokens"].numpy()):
            assert set(tokens) <= words[image_id]


def test_caption_sampling_visits_every_caption_once(setup):
    config, split, tokenizer = setup
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, sampling="caption", batch_size=4))
    ids = np.concatenate([b["image_id"].numpy() for b in training_dataset(split, tokenizer, config)])
    assert collections.Counter(ids.tolist()) == collections.Counter(split.image_ids[o] for o in split.caption_to_image)


def test_epochs_reshuffle_but_runs_repeat(setup):
    config, split, tokenizer = setup

    def order(dataset):
        return np.concatenate([b["image_id"].numpy() for b in dataset])

    dataset = training_dataset(split, tokenizer, config)
    first, second = order(dataset), order(dataset)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(order(training_dataset(split, tokenizer, config)), first)


@pytest.mark.parametrize("batch_size", [8, 7])  # 96 captions: 12 full batches; 13 and 5 captions dropped
def test_length_sorting_keeps_the_epochs_pairs_and_pads_less(setup, batch_size):
    config, split, tokenizer = setup

    def epoch(window):
        train = dataclasses.replace(config.train, sampling="caption", batch_size=batch_size, length_sort_window=window)
        return list(training_dataset(split, tokenizer, dataclasses.replace(config, train=train)))

    def pairs(batches):  # (image id, the caption's words) of every row
        rows = ((b["image_id"].numpy(), b["tokens"].numpy()) for b in batches)
        return collections.Counter((int(i), tuple(t[t != 0])) for ids, tokens in rows for i, t in zip(ids, tokens))

    def padding(batches):
        return sum(int(np.sum(b["tokens"].numpy() == 0)) for b in batches)

    plain, regrouped = epoch(0), epoch(4)
    assert len(regrouped) == len(plain) == split.num_captions // batch_size
    assert all(b["tokens"].shape[0] == batch_size for b in regrouped)
    assert pairs(regrouped) == pairs(plain)  # the same remainder is dropped
    for start in range(0, len(plain), 4):  # each run of 4 batches is regrouped within itself
        assert pairs(regrouped[start : start + 4]) == pairs(plain[start : start + 4])
    if batch_size == 8:  # every caption once, with its own image
        words = (tokenizer(tf.constant([caption])).numpy()[0] for caption in split.captions)
        naive = collections.Counter(
            (split.image_ids[owner], tuple(w[w != 0])) for w, owner in zip(words, split.caption_to_image)
        )
        assert pairs(regrouped) == naive
    assert padding(regrouped) < padding(plain) / 2
    pixels = {int(i): image for b in plain for i, image in zip(b["image_id"].numpy(), b["image"].numpy())}
    for b in regrouped:  # each image stays with its caption
        for image_id, image in zip(b["image_id"].numpy(), b["image"].numpy()):
            np.testing.assert_array_equal(image, pixels[int(image_id)])


def test_eval_batches_keep_order(setup):
    config, split, tokenizer = setup
    images = np.concatenate(list(eval_image_batches(split, "train", config, batch_size=5).as_numpy_iterator()))
    assert images.shape == (split.num_images, 16, 16, 3)
    tokens = np.concatenate(list(eval_caption_batches(split, tokenizer, batch_size=7).as_numpy_iterator()))
    np.testing.assert_array_equal(tokens[3], tokenizer(tf.constant([split.captions[3]])).numpy()[0])


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGBA", 4), ("RGB", 3)])
def test_decode_and_resize_gives_rgb(tmp_path, mode, channels):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new(mode, (40, 30), color=(200,) * channels if channels > 1 else 200).save(path)
    pixels = decode_and_resize(tf.io.read_file(str(path)), 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == tf.uint8
    # Alpha 200 over the white background: (200 * 200 + 255 * 55) / 255, rounded.
    assert int(pixels[8, 8, 0]) == (round((200 * 200 + 255 * 55) / 255) if mode == "RGBA" else 200)


def test_cache_only_when_the_estimate_fits_the_budget(setup):
    from vse_tf.data.pipeline import cache_decision

    config, split, _ = setup  # 32 images of 16x16x3 bytes = 24 KiB
    assert cache_decision(split, config)[0]
    large_images = dataclasses.replace(config, image=dataclasses.replace(config.image, image_size=1024))
    cached, message = cache_decision(split, large_images)  # 32 x 3 MiB = 96 MiB
    assert cached
    tight = dataclasses.replace(large_images, data=dataclasses.replace(large_images.data, cache_budget_mb=64))
    cached, message = cache_decision(split, tight)
    assert not cached and "96 MiB > data.cache_budget_mb=64" in message


@pytest.mark.parametrize("deterministic", [True, False])
def test_determinism_switch_reaches_tf_data(setup, deterministic):
    config, split, tokenizer = setup
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, deterministic=deterministic))
    dataset = training_dataset(split, tokenizer, config)
    assert dataset.options().deterministic is deterministic
    assert int(dataset.cardinality()) == split.num_images // config.train.batch_size
