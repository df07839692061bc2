import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import RELOAD_SCRIPT, SENTENCES, VOCABULARY, tiny_config
from PIL import Image

from vse_tf.config import ImageTowerConfig
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.serving.export import export_towers
from vse_tf.text.tokenizer import SentenceTokenizer


def transparent_pictures(folder):
    """Graded alpha (PNG), a palette PNG and a GIF with a transparent colour, gray + alpha."""
    rgba = np.random.default_rng(5).integers(0, 256, (20, 14, 4), dtype=np.uint8)
    rgba[:6, :, 3] = 0
    drawing = Image.fromarray(rgba, "RGBA")
    palette = drawing.convert("RGB").quantize(16)
    drawing.save(folder / "alpha.png")
    palette.save(folder / "palette.png", transparency=palette.getpixel((0, 0)))
    palette.save(folder / "transparent.gif", transparency=palette.getpixel((0, 0)))
    drawing.convert("LA").save(folder / "gray_alpha.png")
    return [str(folder / name) for name in ("alpha.png", "palette.png", "transparent.gif", "gray_alpha.png")]


@pytest.fixture
def exported(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    model = build_dual_encoder(config, VOCABULARY)
    tokenizer = SentenceTokenizer(VOCABULARY, config.text.max_length)
    paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, tmp_path / "models")
    return config, model, tokenizer, paths, tmp_path / "models"


def test_reloaded_in_plain_tensorflow_gives_the_keras_embeddings(exported, tiny_dataset):
    config, model, tokenizer, paths, models_dir = exported
    # Transparency, palette, gray and GIF go through the one reader in both processes.
    image_paths = sorted(str(p) for p in (tiny_dataset / "images").glob("*.png"))[:2] + transparent_pictures(
        tiny_dataset
    )
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(models_dir), json.dumps(image_paths), json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        check=True,
    )
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert reloaded["modules"] == []
    want_text = model.text_encoder(tokenizer(tf.constant(SENTENCES))).numpy()
    np.testing.assert_allclose(np.array(reloaded["text"]), want_text, atol=1e-5)
    from vse_tf.data.pipeline import decode_and_resize

    pixels = tf.stack([decode_and_resize(tf.io.read_file(p), config.image.image_size) for p in image_paths])
    want_image = model.image_encoder(tf.cast(pixels, tf.float32)).numpy()
    np.testing.assert_allclose(np.array(reloaded["image"]), want_image, atol=1e-5)


def test_saved_model_cli_lists_the_signatures(exported):
    *_, paths, _ = exported
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--tag_set", "serve"]
    text = subprocess.run(
        cli + ["--dir", str(paths["text_encoder"]), "--signature_def", "serving_default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "inputs['sentences']" in text and "DT_STRING" in text and "outputs['embeddings']" in text
    image = subprocess.run(
        cli + ["--dir", str(paths["image_encoder"]), "--signature_def", "serving_default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "inputs['images']" in image and "DT_STRING" in image and "(-1, 16)" in image


def test_export_refuses_to_overwrite_and_carries_the_config(exported):
    config, model, tokenizer, paths, models_dir = exported
    carried = json.loads((paths["text_encoder"] / "assets.extra" / "vse_tf_config.json").read_text())
    assert carried["embed_dim"] == config.embed_dim
    with pytest.raises(FileExistsError, match="encoder/1 exists already"):
        export_towers(model.image_encoder, model.text_encoder, tokenizer, config, models_dir)
    export_towers(model.image_encoder, model.text_encoder, tokenizer, config, models_dir, version=2)
    assert sorted(p.name for p in (models_dir / "image_encoder").iterdir()) == ["1", "2"]


def test_features_backbone_exports_a_float_signature(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    config = config.__class__(**{**config.__dict__, "image": ImageTowerConfig(backbone="features", feature_dim=6)})
    model = build_dual_encoder(config, VOCABULARY)
    tokenizer = SentenceTokenizer(VOCABULARY, config.text.max_length)
    paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, tmp_path / "models")
    serve = tf.saved_model.load(str(paths["image_encoder"])).signatures["serving_default"]
    features = np.random.rand(2, 6).astype("float32")
    np.testing.assert_allclose(
        serve(features=features)["embeddings"].numpy(), model.image_encoder(features).numpy(), atol=1e-5
    )


@pytest.fixture
def towers(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    model = build_dual_encoder(config, VOCABULARY)
    return model.image_encoder, model.text_encoder, SentenceTokenizer(VOCABULARY, config.text.max_length), config


@pytest.mark.parametrize("version", [-1, 0, True, "1", 1.0])
def test_a_version_that_tf_serving_would_not_load_is_refused(towers, tmp_path, version):
    with pytest.raises(ValueError, match="version must be a positive integer"):
        export_towers(*towers, tmp_path / "models", version=version)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*"))


def leftovers(models_dir):
    return sorted(str(path.relative_to(models_dir)) for path in models_dir.rglob(".partial-*"))


def test_a_failure_while_writing_the_text_tower_leaves_no_image_tower(towers, tmp_path, monkeypatch):
    import vse_tf.serving.export as export_module

    original = export_module.write_warmup_requests

    def failing(path, model_name, requests):
        if model_name == "text_encoder":
            raise OSError("disk full")
        original(path, model_name, requests)

    monkeypatch.setattr(export_module, "write_warmup_requests", failing)
    models_dir = tmp_path / "models"
    with pytest.raises(OSError, match="disk full"):
        export_towers(*towers, models_dir)
    assert not (models_dir / "image_encoder" / "1").exists() and not (models_dir / "text_encoder" / "1").exists()
    assert leftovers(models_dir) == []


def test_two_exports_of_one_version_do_not_share_a_temporary(towers, tmp_path, monkeypatch):
    import vse_tf.serving.export as export_module

    original = export_module.write_warmup_requests
    models_dir = tmp_path / "models"
    started = []

    def interleaved(path, model_name, requests):
        original(path, model_name, requests)
        if not started:  # while the first export is half written, a second one writes the same version
            started.append(path)
            export_towers(*towers, models_dir)

    monkeypatch.setattr(export_module, "write_warmup_requests", interleaved)
    with pytest.raises(FileExistsError, match="image_encoder/1 exists already"):
        export_towers(*towers, models_dir)
    assert leftovers(models_dir) == []
    for name in ("image_encoder", "text_encoder"):  # the second export is whole
        assert (models_dir / name / "1" / "assets.extra" / "model_card.json").is_file()
    serve = tf.saved_model.load(str(models_dir / "text_encoder" / "1")).signatures["serving_default"]
    np.testing.assert_allclose(
        serve(sentences=tf.constant(SENTENCES))["embeddings"].numpy(),
        towers[1](towers[2](tf.constant(SENTENCES))).numpy(),
        atol=1e-5,
    )
