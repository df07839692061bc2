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

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vse_tf import __version__
from vse_tf.config import ExperimentConfig, write_text_atomic
from vse_tf.pipeline import decode_and_resize
from vse_tf.text import SentenceTokenizer

IMAGE_ENCODER_NAME = "image_encoder"
TEXT_ENCODER_NAME = "text_encoder"
EXTRA_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_CARD_FILE = "model_card.json"
# Refuse images whose header declares more pixels than this (decompression bombs).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
WARMUP_SENTENCES = ("a small red circle left of a big blue star", "")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class ServingModel:
    """What one export needs: the objects to track, its signatures and its sample requests."""

    name: str
    tracked: tuple  # Keras layers/models, or one tf.Module holding everything
    signatures: dict[str, Callable]
    warmup_inputs: dict[str, dict[str, np.ndarray]]
    limits: dict[str, int]
    description: str


def text_serving_model(tokenizer: SentenceTokenizer, text_encoder: keras.Model) -> ServingModel:
    """Raw sentences -> unit embeddings (tokenizer and encoder in one graph)."""
    serving_tokenizer = SentenceTokenizer(tokenizer.vocabulary, tokenizer.max_length, pad_to_longest=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve_sentences(sentences):
        return {"embeddings": text_encoder(serving_tokenizer(sentences), training=False)}

    return ServingModel(
        name=TEXT_ENCODER_NAME,
        tracked=(serving_tokenizer, text_encoder),
        signatures={"serving_default": serve_sentences},
        warmup_inputs={"serving_default": {"sentences": np.array(WARMUP_SENTENCES, dtype=object)}},
        limits={"max_length": tokenizer.max_length},
        description=(
            "Sentences in, unit embeddings out. Lower-cased, punctuation (ASCII and Unicode) removed, "
            "Chinese/Japanese (Han, Hiragana, Katakana) characters one token each, split on white "
            f"space, truncated to {tokenizer.max_length} tokens; unknown words map to one OOV id; an empty "
            "or blank sentence gets the empty sentence's embedding."
        ),
    )


def image_serving_model(
    image_encoder: keras.Model, config: ExperimentConfig, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> ServingModel:
    """Encoded images (and float pixels) -> unit embeddings; features for that backbone."""
    if config.image.backbone == "features":
        dim = config.image.feature_dim

        @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32, name="features")])
        def serve_features(features):
            return {"embeddings": image_encoder(features, training=False)}

        return ServingModel(
            name=IMAGE_ENCODER_NAME,
            tracked=(image_encoder,),
            signatures={"serving_default": serve_features},
            warmup_inputs={"serving_default": {"features": np.zeros((1, dim), np.float32)}},
            limits={"feature_dim": dim},
            description=f"Precomputed {dim}-d image features in, unit embeddings out.",
        )
    size = config.image.image_size

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_images(images):
        pixels = tf.map_fn(
            lambda encoded: decode_for_serving(encoded, size, max_image_pixels),
            images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        )
        return {"embeddings": image_encoder(tf.cast(pixels, tf.float32), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        already_sized = tf.reduce_all(tf.equal(tf.shape(pixels)[1:3], size))
        resized = tf.cond(
            already_sized,
            lambda: tf.ensure_shape(pixels, [None, size, size, 3]),
            lambda: tf.image.resize(pixels, [size, size], antialias=True),
        )
        return {"embeddings": image_encoder(tf.clip_by_value(tf.round(resized), 0.0, 255.0), training=False)}

    sample = tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(128, tf.uint8))).numpy()
    return ServingModel(
        name=IMAGE_ENCODER_NAME,
        tracked=(image_encoder,),
        signatures={"serving_default": serve_images, "pixels": serve_pixels},
        warmup_inputs={
            "serving_default": {"images": np.array([sample], dtype=object)},
            "pixels": {"pixels": np.full((1, size, size, 3), 128.0, np.float32)},
        },
        limits={"image_size": size, "max_image_pixels": max_image_pixels},
        description=(
            f"Encoded JPEG/PNG/GIF/BMP bytes (any size up to {max_image_pixels} pixels; grayscale and alpha "
            f"become RGB) or float RGB pixels 0..255 of any size, resized to {size}x{size}; unit embeddings out. "
            "Other bytes give InvalidArgument."
        ),
    )


def decode_for_serving(encoded: tf.Tensor, image_size: int, max_pixels: int) -> tf.Tensor:
    """Checks the format and the declared size from the header, then decodes and resizes.

    Raises InvalidArgument (at run time) for bytes that are not JPEG/PNG/GIF/BMP, and for
    images whose header declares more than ``max_pixels`` pixels, before decoding them.
    """
    height, width = _declared_size(encoded)
    known = tf.not_equal(_prefix_format(encoded), 0)
    checks = [
        tf.debugging.Assert(known, ["vse_tf: not a JPEG, PNG, GIF or BMP image"]),
        tf.debugging.Assert(
            height * width <= max_pixels,
            ["vse_tf: image too large:", height, "x", width, "pixels; the limit is", max_pixels],
        ),
    ]
    with tf.control_dependencies(checks):
        return decode_and_resize(tf.identity(encoded), image_size)


def _prefix_format(encoded: tf.Tensor) -> tf.Tensor:
    """1 JPEG, 2 PNG, 3 GIF, 4 BMP, 0 unknown, from the magic bytes."""

    def starts_with(magic: bytes) -> tf.Tensor:
        return tf.equal(tf.strings.substr(encoded, 0, len(magic), unit="BYTE"), magic)

    formats = [
        (starts_with(_JPEG_MAGIC), 1),
        (starts_with(_PNG_MAGIC), 2),
        (tf.logical_or(starts_with(b"GIF87a"), starts_with(b"GIF89a")), 3),
        (starts_with(b"BM"), 4),
    ]
    code = tf.constant(0)
    for matches, value in reversed(formats):
        code = tf.where(matches, value, code)
    return code


def _declared_size(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) as int64 read from the header; (0, 0) when it cannot be read."""
    length = tf.strings.length(encoded, unit="BYTE")
    kind = _prefix_format(encoded)

    def integer(offset: int, dtype: tf.DType, little_endian: bool) -> tf.Tensor:
        raw = tf.strings.substr(encoded, offset, dtype.size, unit="BYTE")
        # Cast before abs: abs has no uint16 kernel; BMP stores negative heights for top-down rows.
        return tf.abs(tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return shape[0], shape[1]

    def png():
        return integer(20, tf.int32, False), integer(16, tf.int32, False)

    def gif():
        return integer(8, tf.uint16, True), integer(6, tf.uint16, True)

    def bmp():
        return integer(22, tf.int32, True), integer(18, tf.int32, True)

    def unknown():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    # A header too short to hold the size falls through to the decoder, which rejects it.
    readable = tf.logical_or(length >= 26, tf.equal(kind, 1))
    return tf.switch_case(tf.where(readable, kind, 0), branch_fns=[unknown, jpeg, png, gif, bmp])


def export_towers(
    image_encoder: keras.Model,
    text_encoder: keras.Model,
    tokenizer: SentenceTokenizer,
    config: ExperimentConfig,
    models_dir: str | os.PathLike,
    version: int = 1,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
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
    temporary = target.with_name(f".{target.name}.partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    _save_graph(model, temporary)
    extra = temporary / EXTRA_DIR
    for name, text in extras.items():
        write_text_atomic(extra / name, text)
    write_warmup_requests(extra / WARMUP_FILE, model.name, model.warmup_inputs)
    card = model_card(temporary, model, version)
    write_text_atomic(extra / MODEL_CARD_FILE, json.dumps(card, indent=2) + "\n")
    os.replace(temporary, target)


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


def write_warmup_requests(path: Path, model_name: str, requests: dict[str, dict[str, np.ndarray]]) -> None:
    """TF Serving's warm-up file: one PredictionLog (predict request) per signature."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_warmup_requests(path: str | os.PathLike) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The (signature name, inputs) of each request in a warm-up file."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        requests.append((request.model_spec.signature_name, inputs))
    return requests


def model_card(saved_model_dir: Path, model: ServingModel, version: int) -> dict:
    """What a client needs to know: signatures with dtypes and shapes, limits and ops."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    signatures = {}
    for name, function in loaded.signatures.items():
        inputs = function.structured_input_signature[1]
        signatures[name] = {
            "inputs": {key: _spec_json(spec) for key, spec in inputs.items()},
            "outputs": {key: _spec_json(spec) for key, spec in function.structured_outputs.items()},
        }
    ops = saved_model_ops(saved_model_dir)
    custom = [op for op in ops if not _is_core_op(op)]
    return {
        "name": model.name,
        "version": version,
        "vse_tf_version": __version__,
        "tensorflow_version": tf.__version__,
        "description": model.description,
        "signatures": signatures,
        "limits": model.limits,
        "output": "unit-length float32 rows; similarity is the dot product",
        "ops": ops,
        "custom_ops": custom,
        "runtime": "core TensorFlow ops only: stock tensorflow/serving and any TensorFlow 2 runtime load it"
        if not custom
        else "needs ops outside core TensorFlow (e.g. TF Text): a model server built with them",
    }


def saved_model_ops(saved_model_dir: str | os.PathLike) -> list[str]:
    """Every op type in a SavedModel's graph and function library, sorted."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    ops: set[str] = set()
    functions: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return sorted(ops - functions)


def _is_core_op(op: str) -> bool:
    # tf.raw_ops holds exactly the ops core TensorFlow registers; TF Text's are not there.
    return hasattr(tf.raw_ops, op)


def _spec_json(spec: tf.TensorSpec) -> dict:
    return {"dtype": spec.dtype.name, "shape": [-1 if size is None else size for size in spec.shape.as_list()]}


def is_version_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and (path / "saved_model.pb").exists()


def latest_version(model_dir: str | os.PathLike) -> Path:
    """The highest numbered version under ``MODELS/<name>/``, as TF Serving would pick."""
    versions = [path for path in Path(model_dir).iterdir() if is_version_dir(path)]
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no numbered SavedModel version directories")
    return max(versions, key=lambda path: int(path.name))
