"""A dataset full of bad input: training runs to the end, and every skip is counted by reason."""

import dataclasses
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from vse_tf.data.pipeline import DecodeTracker, decode_and_resize, training_dataset
from vse_tf.data.records import CaptionRecord, group_by_image
from vse_tf.data.screening import check_image
from vse_tf.data.splits import load_split
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.losses import triplet_ranking_loss
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary
from vse_tf.training.trainer import train

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 60, 220), (230, 220, 30)]
LONG_CAPTION = ("a very long caption " * 500).strip()  # 9,999 characters
assert len(LONG_CAPTION) >= 9_999


def jpeg_bytes(mode="RGB", size=(24, 24), colour=(200, 40, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).convert(mode).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_bad_dataset(root):
    """``root/captions.jsonl`` + ``root/images``; returns the expected skip/repair counts."""
    images = root / "images"
    images.mkdir(parents=True)
    for index in range(8):
        (images / f"good_{index}.jpg").write_bytes(jpeg_bytes(colour=COLOURS[index % 4]))
    for index in range(4):
        (images / f"val_{index}.jpg").write_bytes(jpeg_bytes(colour=COLOURS[index]))
    (images / "gray.jpg").write_bytes(jpeg_bytes("L"))
    (images / "cmyk.jpg").write_bytes(jpeg_bytes("CMYK"))
    Image.new("RGBA", (20, 20), (10, 200, 10, 100)).save(images / "alpha.png")
    (images / "huge.jpg").write_bytes(jpeg_bytes(size=(6000, 6000)))
    whole = jpeg_bytes(size=(64, 64))
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("this is a text file, not a picture\n")
    (root / "escape.jpg").write_bytes(jpeg_bytes())  # exists, but outside the image root
    rows = [(f"good_{i}.jpg", f"a {['red', 'green', 'blue', 'yellow'][i % 4]} picture") for i in range(8)]
    rows += [
        ("gray.jpg", "a gray picture"),
        ("cmyk.jpg", "a cmyk picture"),
        ("alpha.png", "a picture with alpha"),
        ("huge.jpg", "a huge picture"),
        ("truncated.jpg", "cut off"),
        ("empty.jpg", "nothing"),
        ("text.jpg", "words not pixels"),
        ("missing.jpg", "gone"),
        ("../escape.jpg", "escaping"),
        ("good_0.jpg", "   "),
        ("good_1.jpg", LONG_CAPTION),
        ("good_3.jpg", "a cat \U0001f431 on a mat \U0001f600"),
        ("good_4.jpg", "一只红色的猫坐在垫子上"),
    ]
    lines = [json.dumps({"image": image, "caption": caption, "split": "train"}).encode() for image, caption in rows]
    lines.append(b'{"image": "good_2.jpg", "caption": "bad \xff\xfe bytes", "split": "train"}')
    lines += [
        json.dumps({"image": f"val_{i}.jpg", "caption": f"colour {i}", "split": "val"}).encode() for i in range(4)
    ]
    (root / "captions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    skipped = {
        "empty_caption": 1,
        "empty_file": 1,
        "missing_file": 1,
        "not_an_image": 1,
        "outside_image_root": 1,
        "truncated": 1,
    }
    repaired = {"cmyk_to_rgb": 1, "invalid_utf8_replaced": 1, "l_to_rgb": 1, "rgba_to_rgb": 1}
    return skipped, repaired


def test_training_on_bad_input_runs_to_the_end_and_counts_every_skip(tmp_path, capsys):
    skipped, repaired = write_bad_dataset(tmp_path / "bad")
    config = tiny_config(tmp_path / "bad", tmp_path / "run", epochs=1, batch_size=4)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, format="jsonl", test_fraction=0.0))
    run = train(config, verbose=2)
    report = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert report["skipped"] == skipped
    assert report["repaired"] == repaired
    files = report["files"]
    for reason, name in [
        ("truncated", "truncated.jpg"),
        ("empty_file", "empty.jpg"),
        ("not_an_image", "text.jpg"),
        ("missing_file", "missing.jpg"),
        ("outside_image_root", "../escape.jpg"),
        ("empty_caption", "good_0.jpg"),
        ("cmyk_to_rgb", "cmyk.jpg"),
        ("invalid_utf8_replaced", "good_2.jpg"),
    ]:
        assert len(files[reason]) == 1 and name in files[reason][0], (reason, files[reason])
    assert "captions.jsonl: line 17.image" in files["outside_image_root"][0]
    output = capsys.readouterr().out
    assert "input: skipped 6 records (empty_caption 1, empty_file 1, missing_file 1, not_an_image 1, " in output
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["optimizer_steps"] == 3  # 12 usable training images (gray, CMYK, alpha, huge kept) / 4
    assert summary["stopped"] == ""
    vocabulary = set(run.tokenizer.vocabulary)  # the kept captions reached the vocabulary
    assert {"🐱", "😀", "very", "long", "bytes"} <= vocabulary
    assert any("猫" in word for word in vocabulary)
    assert "cut" not in vocabulary and "escaping" not in vocabulary  # skipped records did not


def test_safety_net_drops_an_undecodable_image_and_names_it(tmp_path):
    """A file TensorFlow cannot decode, let past screening, loses its element instead of ending the epoch."""
    paths = []
    for index in range(6):
        path = tmp_path / f"{index}.jpg"
        path.write_bytes(jpeg_bytes(colour=COLOURS[index % 4]))
        paths.append(str(path))
    whole = jpeg_bytes(size=(64, 64))
    (tmp_path / "2.jpg").write_bytes(whole[: len(whole) // 2])
    records = [CaptionRecord(path, f"caption {index}", index, "train") for index, path in enumerate(paths)]
    split = group_by_image(records)
    config = tiny_config(tmp_path, tmp_path / "run", batch_size=3)
    tokenizer = SentenceTokenizer(build_vocabulary(split.captions), 8)
    tracker = DecodeTracker(split.image_refs)
    dataset = training_dataset(split, tokenizer, config, tracker=tracker)
    assert int(dataset.cardinality()) == 2  # 6 images // 3, known to Keras
    batches = list(dataset)
    ids = np.concatenate([batch["image_id"].numpy() for batch in batches])
    # the 5 decodable images fill one batch; the missing one comes from a reshuffled pass
    assert len(batches) == 2 and 2 not in ids and set(ids[:3]) | set(ids[3:]) <= {0, 1, 3, 4, 5}
    assert tracker.failed() == [paths[2]]


@pytest.mark.parametrize(
    "mode, expected",
    [("CMYK", (200, 40, 10)), ("L", (85, 85, 85)), ("RGB", (200, 40, 10))],
)
def test_cmyk_and_grayscale_jpeg_decode_to_rgb(mode, expected):
    pixels = decode_and_resize(tf.constant(jpeg_bytes(mode)), 8).numpy()
    assert pixels.shape == (8, 8, 3)
    np.testing.assert_allclose(pixels[4, 4], expected, atol=6)


def test_check_image_reasons(tmp_path):
    def write(name, data):
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)

    png = io.BytesIO()
    Image.new("RGB", (30, 30), (1, 2, 3)).save(png, "PNG")
    png = png.getvalue()
    assert check_image(write("ok.png", png)).problem == ""
    assert check_image(write("cut.png", png[:-20])).problem == "truncated"
    # JPEG padded after its end marker still passes (the full decode confirms it)
    assert check_image(write("padded.jpg", jpeg_bytes() + b"\0" * 5000)).problem == ""
    assert check_image(write("big.jpg", jpeg_bytes(size=(300, 200))), max_image_pixels=50_000).problem == "too_large"
    assert (
        check_image(write("header.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 10 + b"\xff\xd9")).problem
        == "unreadable_header"
    )
    assert check_image(str(tmp_path / "none.jpg")).problem == "missing_file"
    assert check_image(write("cmyk.jpg", jpeg_bytes("CMYK"))).mode == "CMYK"


def test_two_captions_of_one_image_in_a_batch_are_not_negatives(tiny_dataset, tmp_path):
    """Caption sampling puts captions of one image in one batch; the model's loss masks them by image id."""
    config = tiny_config(tiny_dataset, tmp_path / "run", sampling="caption", batch_size=16)
    split = load_split(config, "train")
    tokenizer = SentenceTokenizer(build_vocabulary(split.captions), config.text.max_length)
    batches = list(training_dataset(split, tokenizer, config))
    batch = next(b for b in batches if len(set(b["image_id"].numpy())) < 16)
    image_config = dataclasses.replace(config, train=dataclasses.replace(config.train, sampling="image"))
    image_batches = list(training_dataset(split, tokenizer, image_config))
    assert all(len(set(b["image_id"].numpy())) == 16 for b in image_batches)
    model = build_dual_encoder(config, build_vocabulary(split.captions))
    embeddings = model(batch, training=False)
    images, captions = embeddings["image_embeddings"], embeddings["caption_embeddings"]
    margin = config.loss.margin
    masked = triplet_ranking_loss(images, captions, margin=margin, max_violation=False, image_ids=batch["image_id"])
    unmasked = triplet_ranking_loss(images, captions, margin=margin, max_violation=False)
    model_loss = model.global_batch_loss(batch, training=False)
    np.testing.assert_allclose(float(model_loss), float(masked), rtol=1e-5)
    assert abs(float(masked) - float(unmasked)) > 1e-4
