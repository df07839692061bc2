"""What travels beside a SavedModel: TF Serving warm-up requests and the model card with its op list."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from vse_tf import __version__
from vse_tf.serving.signatures import ServingModel

EXTRA_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_CARD_FILE = "model_card.json"


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
        "runtime": _runtime(custom),
    }


# TF Text ops in every stock tensorflow/serving release that links TF Text's op library (2.12
# and later certainly); the MiniLM text tower uses only these (see docs/text-minilm.md).
STOCK_SERVING_TEXT_OPS = frozenset({"NormalizeUTF8", "WordpieceTokenizeWithOffsets"})


def _runtime(custom_ops: list[str]) -> str:
    """Which runtime loads a graph with these non-core ops."""
    if not custom_ops:
        return "core TensorFlow ops only: stock tensorflow/serving and any TensorFlow 2 runtime load it"
    if set(custom_ops) <= STOCK_SERVING_TEXT_OPS:
        return (
            f"core TensorFlow plus the TF Text ops {', '.join(custom_ops)}, which the stock tensorflow/serving "
            "model server (2.12 or later) links; in Python, `import tensorflow_text` before loading"
        )
    return "needs ops outside core TensorFlow (e.g. TF Text): a model server built with them"


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
