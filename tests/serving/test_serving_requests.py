"""Requests a TF Serving client can send, through the reloaded SavedModels."""

import base64
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from vse_tf.data.images import declared_pixels
from vse_tf.data.pipeline import batch_tokenizer
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.serving.decoding import decode_batch_for_serving, decode_for_serving
from vse_tf.serving.export import export_towers
from vse_tf.serving.model_card import MODEL_CARD_FILE, WARMUP_FILE, read_warmup_requests
from vse_tf.text.tokenizer import SentenceTokenizer, split_words

VOCABULARY = ["a", "red", "green", "block", "on", "the", "left", "right"]
SERVING_DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    config = tiny_config(root / "data", root / "run")
    model = build_dual_encoder(config, VOCABULARY)
    tokenizer = SentenceTokenizer(VOCABULARY, config.text.max_length)
    paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, root / "models")
    text = tf.saved_model.load(str(paths["text_encoder"]))
    image = tf.saved_model.load(str(paths["image_encoder"]))
    return {"paths": paths, "text": text, "image": image, "config": config, "tokenizer": tokenizer}


def embed_text(exported, sentences):
    return exported["text"].signatures["serving_default"](sentences=tf.constant(sentences))["embeddings"].numpy()


def embed_images(exported, encoded):
    serve = exported["image"].signatures["serving_default"]
    return serve(images=tf.constant(encoded, dtype=tf.string))["embeddings"].numpy()


def test_warmup_requests_read_back_and_replay(exported):
    for name in ("text_encoder", "image_encoder"):
        path = exported["paths"][name]
        requests = read_warmup_requests(path / "assets.extra" / WARMUP_FILE)
        loaded = exported["text" if name == "text_encoder" else "image"]
        assert {signature for signature, _ in requests} == set(loaded.signatures)
        for signature, inputs in requests:
            outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
            embeddings = outputs["embeddings"].numpy()
            assert embeddings.shape == (len(next(iter(inputs.values()))), exported["config"].embed_dim)
            assert np.all(np.isfinite(embeddings))


def test_model_card_config_and_vocabulary_travel_with_the_model(exported):
    text_dir, image_dir = exported["paths"]["text_encoder"], exported["paths"]["image_encoder"]
    card = json.loads((text_dir / "assets.extra" / MODEL_CARD_FILE).read_text())
    assert card["signatures"]["serving_default"]["inputs"] == {"sentences": {"dtype": "string", "shape": [-1]}}
    assert card["signatures"]["serving_default"]["outputs"]["embeddings"]["shape"] == [-1, 16]
    assert card["custom_ops"] == [] and "core TensorFlow" in card["runtime"]
    assert {"StringLower", "StringSplitV2", "LookupTableFindV2"} <= set(card["ops"])
    image_card = json.loads((image_dir / "assets.extra" / MODEL_CARD_FILE).read_text())
    assert set(image_card["signatures"]) == {"serving_default", "pixels"}
    assert image_card["signatures"]["pixels"]["inputs"]["pixels"] == {"dtype": "float32", "shape": [-1, -1, -1, 3]}
    assert "DecodeImage" in image_card["ops"] and image_card["custom_ops"] == []
    assert (text_dir / "assets.extra" / "vocabulary.txt").read_text().split() == VOCABULARY
    assert json.loads((image_dir / "assets.extra" / "vse_tf_config.json").read_text())["embed_dim"] == 16


def test_text_edge_cases_have_defined_results(exported):
    max_length = exported["config"].text.max_length
    long_text = "red block " * 10_000  # 100,000 characters
    sentences = ["", "   \t ", "?!", "zebra", long_text, "red block " * (max_length // 2)]
    empty, blank, punctuation, unknown, long, truncated = embed_text(exported, sentences)
    # A sentence without words is read as the one unknown word: a unit row, never zeros.
    np.testing.assert_allclose(np.linalg.norm(empty), 1.0, atol=1e-5)
    for same in (blank, punctuation, unknown):
        np.testing.assert_allclose(empty, same, atol=1e-6)
    np.testing.assert_allclose(long, truncated, atol=1e-6)


def test_images_of_any_format_and_size_under_the_limit(exported):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    tiny = Image.new("RGB", (1, 1), (200, 30, 30))
    encoded = [
        encode(rgb, "PNG"),
        encode(rgb, "JPEG"),
        encode(rgb.convert("L"), "JPEG"),
        encode(rgb.convert("RGBA"), "PNG"),
        encode(rgb, "GIF"),
        encode(rgb, "BMP"),
        encode(tiny, "PNG"),
    ]
    embeddings = embed_images(exported, encoded)
    assert embeddings.shape == (len(encoded), 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\xff\xd8\xff\xe0 truncated jpeg", b"GIF89a"])
def test_non_images_are_invalid_argument(exported, payload):
    with pytest.raises(tf.errors.InvalidArgumentError):
        embed_images(exported, [payload])


def test_huge_images_are_refused_before_decoding(exported):
    huge = encode(Image.new("RGB", (8000, 8000), (10, 200, 10)), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        embed_images(exported, [huge])


@pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "BMP"])
def test_declared_size_is_read_from_each_header(format):
    encoded = tf.constant(encode(Image.new("RGB", (300, 200), (1, 2, 3)), format))
    assert decode_for_serving(encoded, 8, max_pixels=60_000).shape == (8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        decode_for_serving(encoded, 8, max_pixels=59_999)


def test_pixels_signature_matches_encoded_bytes(exported):
    pixels = np.random.default_rng(1).integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    from_bytes = embed_images(exported, [encode(Image.fromarray(pixels[0]), "PNG")])
    serve = exported["image"].signatures["pixels"]
    from_pixels = serve(pixels=tf.constant(pixels, tf.float32))["embeddings"].numpy()
    np.testing.assert_allclose(from_pixels, from_bytes, atol=1e-5)


def rest_bodies():
    """The JSON request bodies docs/serving.md shows, by model name."""
    text = SERVING_DOC.read_text()
    return {name: json.loads(body) for name, body in re.findall(r"<!-- rest:(\w+) -->\s*```json\n(.*?)```", text, re.S)}


def rest_to_tensors(body, signature):
    """TF Serving's REST row format: "instances" is the batch; {"b64": ...} is bytes."""

    def value(item):
        return base64.b64decode(item["b64"]) if isinstance(item, dict) and "b64" in item else item

    (name,) = signature.structured_input_signature[1]
    spec = signature.structured_input_signature[1][name]
    rows = [value(item) for item in body["instances"]]
    return {name: tf.constant(rows, dtype=spec.dtype)}


def test_readme_rest_bodies_feed_the_exported_signatures(exported):
    bodies = rest_bodies()
    assert set(bodies) == {"text_encoder", "image_encoder"}
    for name, loaded in (("text_encoder", exported["text"]), ("image_encoder", exported["image"])):
        body = bodies[name]
        signature = loaded.signatures[body.get("signature_name", "serving_default")]
        embeddings = signature(**rest_to_tensors(body, signature))["embeddings"].numpy()
        assert embeddings.shape == (len(body["instances"]), 16)


def gif_with_frame(width: int, height: int, payload: int = 0, screen: tuple[int, int] = (16, 16)) -> bytes:
    """A GIF whose 16x16 logical screen hides one frame of ``width x height`` pixels
    (``payload`` bytes of image data in 255-byte sub-blocks: a decompression bomb's shape)."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    blocks = b"".join(b"\xff" + bytes(255) for _ in range(payload // 255))
    return header + descriptor + b"\x02" + blocks + b"\x00" + b";"


@pytest.mark.parametrize("side", [40_000, 8_000])
def test_a_huge_gif_frame_behind_a_small_screen_is_refused_before_decoding(exported, side):
    bomb = gif_with_frame(side, side, payload=100_000 if side == 40_000 else 0)
    small = encode(Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"image too large: image.*1.*{side * side}"):
        embed_images(exported, [small, bomb])


def test_every_gif_frame_is_counted_as_pil_reads_the_frames():
    frames = [Image.new("P", (30, 20), 1), Image.new("P", (30, 20), 2), Image.new("P", (30, 20), 3)]
    encoded = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], optimize=False, disposal=2)
    with Image.open(io.BytesIO(encoded)) as image:
        tiles = []
        for index in range(image.n_frames):
            image.seek(index)
            x0, y0, x1, y1 = image.tile[0][1] if image.tile else image.dispose_extent
            tiles.append((x1 - x0) * (y1 - y0))
        screen = image.size[0] * image.size[1]
    largest, total = declared_pixels(tf.constant(encoded))
    assert (int(largest), int(total)) == (max([screen, *tiles]), screen + sum(tiles))


def test_a_batch_declaring_too_many_pixels_in_all_is_refused():
    image = encode(Image.new("RGB", (300, 200), (1, 2, 3)), "PNG")  # 60,000 pixels each
    assert decode_batch_for_serving(tf.constant([image]), 8, max_batch_pixels=100_000).shape == (1, 8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)batch too large.*120000"):
        decode_batch_for_serving(tf.constant([image, image]), 8, max_batch_pixels=100_000)


def test_an_empty_batch_gives_zero_rows_for_images_as_for_text(exported):
    assert embed_images(exported, []).shape == (0, 16)
    assert embed_text(exported, np.array([], dtype=object)).shape == (0, 16)
    pixels = exported["image"].signatures["pixels"](pixels=tf.zeros([0, 16, 16, 3]))["embeddings"]
    assert pixels.shape == (0, 16)


def test_non_finite_pixels_are_invalid_argument(exported):
    serve = exported["image"].signatures["pixels"]
    for bad in (np.nan, np.inf):
        pixels = np.full((2, 16, 16, 3), 100.0, np.float32)
        pixels[1, 3, 4, 0] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="pixels must be finite"):
            serve(pixels=tf.constant(pixels))


def test_a_nul_byte_is_a_word_break_in_training_and_serving(exported):
    tokenizer, config = exported["tokenizer"], exported["config"]
    with_nul, spaced = ["a red\x00block on the left", "\x00green"], ["a red block on the left", " green"]
    np.testing.assert_allclose(embed_text(exported, with_nul), embed_text(exported, spaced), atol=1e-6)
    training = batch_tokenizer(tokenizer, config)
    np.testing.assert_array_equal(training(tf.constant(with_nul)), training(tf.constant(spaced)))
    np.testing.assert_array_equal(tokenizer(tf.constant(with_nul)), tokenizer(tf.constant(spaced)))
    assert split_words(with_nul) == [["a", "red", "block", "on", "the", "left"], ["green"]]
