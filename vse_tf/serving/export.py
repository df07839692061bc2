"""Export each tower as its own SavedModel for TF Serving.

``MODELS/text_encoder/N/``: ``serving_default`` takes ``sentences: tf.string [None]``.
``MODELS/image_encoder/N/``: ``serving_default`` takes ``images: tf.string [None]``
(encoded JPEG/PNG/GIF/BMP bytes) and ``pixels`` takes ``pixels: float32 [None, H, W, 3]``
(RGB 0..255, any size). A run trained on precomputed features exports the backbone its
``features.json`` records (weights hash checked) in front of the trained projection, so it
takes the same inputs, plus ``features: float32 [None, F]`` (signature ``features``);
without a record only ``serving_default`` taking features. Every signature returns
``embeddings: float32 [None, D]``, unit rows, so retrieval is a dot product.

Beside the graph each version carries, in ``assets.extra/``: the run's config, the
vocabulary, ``model_card.json`` (signatures, limits, the ops the graph needs) and
``tf_serving_warmup_requests`` (PredictionLog records TF Serving replays at load time).
Both towers of a version are written under unique temporary names and renamed together
when both are complete, so a reader never sees half an export (nor one tower without the
other), and an existing version is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf

from vse_tf.config import ExperimentConfig
from vse_tf.data.image_facts import MAX_BATCH_PIXELS, MAX_IMAGE_PIXELS
from vse_tf.files import atomic_path, partial_path, write_json_atomic, write_text_atomic
from vse_tf.image.feature_record import RECORD_FILE, read_feature_record, recorded_backbone
from vse_tf.serving.model_card import EXTRA_DIR, MODEL_CARD_FILE, WARMUP_FILE, model_card, write_warmup_requests
from vse_tf.serving.signatures import (
    IMAGE_ENCODER_NAME,
    TEXT_ENCODER_NAME,
    ServingModel,
    image_serving_model,
    text_serving_model,
)
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
    max_batch_pixels: int = MAX_BATCH_PIXELS,
) -> dict[str, Path]:
    """Writes ``models_dir/image_encoder/<version>/`` and ``models_dir/text_encoder/<version>/``.

    Returns:
        ``{"image_encoder": path, "text_encoder": path}``.

    Raises:
        ValueError: ``version`` is not a positive integer (TF Serving loads only those), or
            the recorded backbone's weights changed since they made the features.
        FileExistsError: a version directory exists already (exports are never overwritten).
        FileNotFoundError: the weights the features record names are missing.
    """
    version = check_version(version)
    models_dir = Path(models_dir)
    for name in (IMAGE_ENCODER_NAME, TEXT_ENCODER_NAME):
        _refuse_existing(models_dir / name / str(version))
    image_model, record = _image_model(image_encoder, config, max_image_pixels, max_batch_pixels)
    models = [image_model, text_serving_model(tokenizer, text_encoder)]
    extras = {"vse_tf_config.json": config.to_json() + "\n", "vocabulary.txt": "\n".join(tokenizer.vocabulary) + "\n"}
    image_extras = {**extras, **({RECORD_FILE: json.dumps(record, indent=2) + "\n"} if record else {})}
    targets = {model.name: models_dir / model.name / str(version) for model in models}
    with _temporaries(targets) as temporaries:
        for model in models:
            model_extras = image_extras if model.name == IMAGE_ENCODER_NAME else extras
            _write_version(model, temporaries[model.name], version, model_extras)
        _rename_together(temporaries, targets)
    return targets


def check_version(version: object) -> int:
    """``version`` as a positive int; TF Serving loads only positive integer version folders."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving loads only those), got {version!r}")
    return version


def _image_model(
    image_encoder: keras.Model, config: ExperimentConfig, max_image_pixels: int, max_batch_pixels: int
) -> tuple[ServingModel, dict | None]:
    """The image tower's serving model; for a features run, with the recorded backbone in front."""
    if config.image.backbone != "features":
        return image_serving_model(image_encoder, config, max_image_pixels, max_batch_pixels), None
    record = read_feature_record(config.data.features_dir)
    if record is None:
        warnings.warn(
            f"{config.data.features_dir or 'data.features_dir'}: no {RECORD_FILE} records the backbone that made "
            "the features, so the exported image tower takes features only (python -m train.features writes it)",
            stacklevel=3,
        )
        return image_serving_model(image_encoder, config, max_image_pixels, max_batch_pixels), None
    backbone = recorded_backbone(config.data.features_dir, record)
    model = image_serving_model(
        image_encoder, config, max_image_pixels, max_batch_pixels, backbone, tuple(record["background"])
    )
    return model, record


def _refuse_existing(target: Path) -> None:
    if target.exists():
        raise FileExistsError(f"{target} exists already; pick another --version")


@contextlib.contextmanager
def _temporaries(targets: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """A unique temporary folder beside each target; whatever is left of them is removed."""
    temporaries = {name: partial_path(target) for name, target in targets.items()}
    for target in targets.values():
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporaries
    finally:
        for temporary in temporaries.values():
            shutil.rmtree(temporary, ignore_errors=True)


def _rename_together(temporaries: dict[str, Path], targets: dict[str, Path]) -> None:
    """Renames every temporary to its target, or none: a failure undoes the renames done."""
    done: list[str] = []
    try:
        for name, temporary in temporaries.items():
            _refuse_existing(targets[name])
            try:
                os.rename(temporary, targets[name])
            except OSError as error:  # another export took the version meanwhile
                raise FileExistsError(f"{targets[name]} exists already; pick another --version") from error
            done.append(name)
    except BaseException:
        for name in done:
            os.rename(targets[name], temporaries[name])
        raise


def write_serving_model(model: ServingModel, target: Path, version: int, extras: dict[str, str]) -> None:
    """Writes one SavedModel with its model card, warm-up requests and extra files, atomically."""
    with atomic_path(target) as temporary:
        _write_version(model, temporary, version, extras)


def _write_version(model: ServingModel, directory: Path, version: int, extras: dict[str, str]) -> None:
    """The SavedModel, its extra files, warm-up requests and model card, in ``directory``."""
    _save_graph(model, directory)
    extra = directory / EXTRA_DIR
    for name, text in extras.items():
        write_text_atomic(extra / name, text)
    write_warmup_requests(extra / WARMUP_FILE, model.name, model.warmup_inputs)
    write_json_atomic(extra / MODEL_CARD_FILE, model_card(directory, model, version))


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
