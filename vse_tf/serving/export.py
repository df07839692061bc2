"""Export each tower as its own SavedModel for TF Serving.

``MODELS/text_encoder/N/``: ``serving_default`` takes ``sentences: tf.string [None]``.
``MODELS/image_encoder/N/``: ``serving_default`` takes ``images: tf.string [None]``
(encoded JPEG/PNG/GIF/BMP bytes) and ``pixels`` takes ``pixels: float32 [None, H, W, 3]``
(RGB 0..255, any size); for the ``features`` backbone ``serving_default`` takes
``features: float32 [None, F]``. Every signature returns ``embeddings: float32 [None, D]``,
unit rows, so retrieval is a dot product.

Beside the graph each version carries, in ``assets.extra/``: the run's config, the
vocabulary, ``model_card.json`` (signatures, limits, the ops the graph needs) and
``tf_serving_warmup_requests`` (PredictionLog records TF Serving replays at load time).
A version directory is written under a temporary name and renamed when complete, so a
reader never sees half an export, and an existing version is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.data.image_facts import MAX_IMAGE_PIXELS
from vse_tf.files import atomic_path, write_json_atomic, write_text_atomic
from vse_tf.serving.model_card import EXTRA_DIR, MODEL_CARD_FILE, WARMUP_FILE, model_card, write_warmup_requests
from vse_tf.serving.signatures import ServingModel, image_serving_model, text_serving_model
from vse_tf.text.tokenizer import SentenceTokenizer
from vse_tf.text.wordpiece import WordPieceTokenizer
from vse_tf.training.run import Run


def export_towers(
    image_encoder: keras.Model,
    text_encoder: keras.Model,
    tokenizer: SentenceTokenizer | WordPieceTokenizer,
    config: ExperimentConfig,
    models_dir: str | os.PathLike,
    version: int = 1,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> dict[str, Path]:
    """Writes ``models_dir/image_encoder/<version>/`` and ``models_dir/text_encoder/<version>/``.

    Returns:
        ``{"image_encoder": path, "text_encoder": path}``.

    Raises:
        FileExistsError: a version directory exists already (exports are never overwritten).
    """
    models = [
        image_serving_model(image_encoder, config, max_image_pixels),
        text_serving_model(tokenizer, text_encoder),
    ]
    targets = {model.name: Path(models_dir) / model.name / str(version) for model in models}
    for target in targets.values():
        if target.exists():
            raise FileExistsError(f"{target} exists already; pick another --version")
    extras = {"vse_tf_config.json": config.to_json() + "\n", "vocabulary.txt": "\n".join(tokenizer.vocabulary) + "\n"}
    for model in models:
        write_serving_model(model, targets[model.name], version, extras)
    return targets


def write_serving_model(model: ServingModel, target: Path, version: int, extras: dict[str, str]) -> None:
    """Writes one SavedModel with its model card, warm-up requests and extra files."""
    with atomic_path(target) as temporary:
        _save_graph(model, temporary)
        extra = temporary / EXTRA_DIR
        for name, text in extras.items():
            write_text_atomic(extra / name, text)
        write_warmup_requests(extra / WARMUP_FILE, model.name, model.warmup_inputs)
        write_json_atomic(extra / MODEL_CARD_FILE, model_card(temporary, model, version))


def _save_graph(model: ServingModel, directory: Path) -> None:
    """Keras objects go through ExportArchive; a plain tf.Module through tf.saved_model.save."""
    if all(isinstance(resource, keras.layers.Layer) for resource in model.tracked):
        archive = keras.export.ExportArchive()
        for resource in model.tracked:
            archive.track(resource)
        for name, function in model.signatures.items():
            archive.add_endpoint(name, function)
        archive.write_out(str(directory), verbose=False)
    else:
        (module,) = model.tracked
        tf.saved_model.save(module, str(directory), signatures=model.signatures)


def export_run(run: Run, models_dir: str | os.PathLike, version: int = 1) -> dict[str, Path]:
    """Exports the run's two towers as SavedModels (see :func:`vse_tf.serving.export.export_towers`)."""
    return export_towers(
        run.model.image_encoder, run.model.text_encoder, run.tokenizer, run.config, models_dir, version
    )
