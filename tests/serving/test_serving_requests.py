"""Requests a TF Serving client can send, through the reloaded SavedModels."""

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.serving.decoding import decode_for_serving
from vse_tf.serving.export import export_towers
from vse_tf.serving.model_card import MODEL_CARD_FILE, WARMUP_FILE, read_warmup_requests
from vse_tf.text.tokenizer import SentenceTokenizer

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
