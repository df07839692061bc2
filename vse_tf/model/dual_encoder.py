"""DualEncoder: both towers and the ranking loss, trained with ``compile``/``fit``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from vse_tf.config import LOSS_KINDS, ExperimentConfig
from vse_tf.image.towers import build_image_tower
from vse_tf.model._keras_compat import BuildsWithoutData, reducible_log
from vse_tf.model.chunked_losses import (
    chunked_infonce_loss,
    chunked_siglip_loss,
    chunked_triplet_ranking_loss,
)
from vse_tf.model.distribution import gather_from_replicas, sum_over_replicas
from vse_tf.model.gradient_cache import cached_gradients, check_cacheable
from vse_tf.model.losses import (
    fine_grained_labels,
    infonce_loss,
    logit_scale,
    pairwise_similarity_loss,
    same_category_labels,
    siglip_loss,
    triplet_ranking_loss,
)
from vse_tf.text.towers import build_text_tower

# The batch entry each pairwise loss kind builds its labels from.
LABEL_SOURCES = {"finegrained": "text_vector", "category": "category_id"}
_SOURCE_HINTS = {
    "text_vector": "set loss.text_vectors to the file written by `python -m train.siamese`",
    "category_id": "every training image needs a category",
}


@keras.saving.register_keras_serializable(package="vse_tf")
class ClipToRange(keras.constraints.Constraint):
    """Keeps a variable in ``[minimum, maximum]`` after every optimizer step (CLIP clamps its logit scale so)."""

    def __init__(self, minimum: float, maximum: float):
        self.minimum = float(minimum)
        self.maximum = float(maximum)

    def __call__(self, w):
        return keras.ops.clip(w, self.minimum, self.maximum)

    def get_config(self):
        return {"minimum": self.minimum, "maximum": self.maximum}


@keras.saving.register_keras_serializable(package="vse_tf")
class DualEncoder(BuildsWithoutData, keras.Model):
    """Image tower + text tower + a ranking loss (triplet, pairwise or fine-grained pairwise).

    Inputs are batches ``{"image": [B, ...], "tokens": int64 [B, L], "image_id": int64 [B]}``
    (plus ``"text_vector": float32 [B, S]``, siamese vectors of the captions, for
    ``loss_kind="finegrained"``, or ``"category_id": int64 [B]`` for ``"category"``);
    row i of "image" and "tokens" is a positive pair, every
    other row a negative.
    ``max_violation`` is a non-trainable variable so that a callback can switch from the
    sum of hinges to the hardest negative without retracing the step.

    Args:
        image_encoder: model ``[B, ...] -> [B, D]`` unit rows.
        text_encoder: model ``int64 [B, L] -> [B, D]`` unit rows.
        margin: hinge margin.
        max_violation: initial value of the hardest-negative switch.
        loss_kind: ``triplet``, ``pairwise``, ``category`` or ``finegrained`` (see :mod:`vse_tf.model.losses`).
        pairwise_scale: logit scale of the pairwise losses.
        pairwise_offset: similarity at which their logit is 0.
        finegrained_strength: scale of the fine-grained labels of non-matching pairs.
        temperature: ``infonce``: initial temperature; the trainable weight
            ``log_logit_scale`` starts at ``log(1 / temperature)`` and is kept in
            ``[0, log(max_logit_scale)]``.
        max_logit_scale: ``infonce``: the largest logit scale.
        siglip_scale: ``siglip``: initial scale t (trainable weight ``siglip_log_scale`` = log t).
        siglip_bias: ``siglip``: initial bias b (trainable weight ``siglip_bias``).
        micro_batch: 0 for one pass over the batch; ``M > 0``: gradient caching
            (:mod:`vse_tf.model.gradient_cache`), the towers run ``M`` rows at a time and the
            loss still sees the whole global batch.

    The learned scalars are logged with the loss (``logit_scale``, or ``siglip_scale`` and
    ``siglip_bias``), so TensorBoard shows them per epoch.
    """

    def __init__(
        self,
        image_encoder: keras.Model,
        text_encoder: keras.Model,
        margin: float = 0.2,
        max_violation: bool = False,
        loss_kind: str = "triplet",
        pairwise_scale: float = 10.0,
        pairwise_offset: float = 0.5,
        finegrained_strength: float = 1.0,
        temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        siglip_scale: float = 10.0,
        siglip_bias: float = -10.0,
        micro_batch: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if loss_kind not in LOSS_KINDS:
            raise ValueError(f"loss_kind must be one of {LOSS_KINDS}, got {loss_kind!r}")
        self.loss_kind = loss_kind
        self.pairwise_scale = float(pairwise_scale)
        self.pairwise_offset = float(pairwise_offset)
        self.finegrained_strength = float(finegrained_strength)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.margin = float(margin)
        self.max_violation = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(1.0 if max_violation else 0.0),
            trainable=False,
            name="max_violation",
        )
        self.temperature = float(temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.siglip_scale = float(siglip_scale)
        self.siglip_bias = float(siglip_bias)
        self.loss_scalars = self._add_loss_scalars()
        self.micro_batch = int(micro_batch)
        if self.micro_batch:
            check_cacheable(self)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # Both towers are built functional models, so this model has all its weights now
        # (BackupAndRestore and load_weights need a built model).
        self.built = True

    def _add_loss_scalars(self) -> dict:
        """The loss's trainable scalars by name: InfoNCE's log logit scale, SigLIP's log scale and bias."""
        if self.loss_kind == "infonce":
            ceiling = math.log(self.max_logit_scale)
            initial = min(math.log(1.0 / self.temperature), ceiling)
            return {"log_logit_scale": self._scalar("log_logit_scale", initial, ClipToRange(0.0, ceiling))}
        if self.loss_kind == "siglip":
            return {
                "siglip_log_scale": self._scalar("siglip_log_scale", math.log(self.siglip_scale)),
                "siglip_bias": self._scalar("siglip_bias", self.siglip_bias),
            }
        return {}

    def _scalar(self, name: str, initial: float, constraint=None):
        # float32 whatever the dtype policy: the loss is computed in float32.
        return self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(initial),
            trainable=True,
            name=name,
            dtype="float32",
            constraint=constraint,
        )

    def call(self, inputs, training=False):
        return {
            "image_embeddings": self.image_encoder(inputs["image"], training=training),
            "caption_embeddings": self.text_encoder(inputs["tokens"], training=training),
        }

    def ranking_loss(
        self, embeddings: dict, image_ids: tf.Tensor, label_source: tf.Tensor | None = None, chunk: int = 0
    ) -> tf.Tensor:
        """The loss of one batch (summed; InfoNCE and SigLIP: their papers' mean over the batch).

        ``label_source`` is what the pairwise labels come from: ``float [B, S]`` siamese
        text vectors for ``finegrained``, ``int [B]`` category ids for ``category``.
        ``chunk > 0`` computes the triplet, InfoNCE and SigLIP losses that many image rows
        at a time (:mod:`vse_tf.model.chunked_losses`: the same value, ``[chunk, B]`` scores
        at once) when the batch size is static; the pairwise losses take one block.
        """
        images, captions = embeddings["image_embeddings"], embeddings["caption_embeddings"]
        one_block, chunked, options = self._loss_function(image_ids, label_source)
        if chunk and chunked is not None and images.shape[0] is not None:
            return chunked(images, captions, chunk=chunk, image_ids=image_ids, **options)
        return one_block(images, captions, image_ids=image_ids, **options)

    def _loss_function(self, image_ids: tf.Tensor, label_source: tf.Tensor | None) -> tuple:
        """``(one-block loss, its chunked twin or None, keyword options)`` of ``loss.kind``."""
        if self.loss_kind == "infonce":
            options = {
                "log_logit_scale": self.loss_scalars["log_logit_scale"],
                "max_logit_scale": self.max_logit_scale,
                "reduction": "mean",
            }
            return infonce_loss, chunked_infonce_loss, options
        if self.loss_kind == "siglip":
            options = {
                "log_scale": self.loss_scalars["siglip_log_scale"],
                "bias": self.loss_scalars["siglip_bias"],
                "reduction": "mean",
            }
            return siglip_loss, chunked_siglip_loss, options
        if self.loss_kind != "triplet":
            options = {
                "labels": self._pair_labels(image_ids, label_source),
                "scale": self.pairwise_scale,
                "offset": self.pairwise_offset,
                "reduction": "sum",
            }
            return pairwise_similarity_loss, None, options
        options = {"margin": self.margin, "max_violation": self.max_violation > 0.5, "reduction": "sum"}
        return triplet_ranking_loss, chunked_triplet_ranking_loss, options

    def _pair_labels(self, image_ids: tf.Tensor, label_source: tf.Tensor | None) -> tf.Tensor | None:
        if self.loss_kind == "finegrained":
            return fine_grained_labels(label_source, image_ids, self.finegrained_strength)
        if self.loss_kind == "category":
            return same_category_labels(label_source)
        return None  # pairwise: 1 for a caption and its own image, from image_ids

    def global_batch_loss(self, data, training: bool) -> tf.Tensor:
        """The loss of the global batch: every replica's embeddings are negatives.

        Under a distribution strategy each replica gathers the others' embeddings (no
        gradient through them) around its own (with gradient), so every replica computes
        the same value: the loss one device would compute on the whole batch.
        """
        embeddings = self(data, training=training)
        return self.loss_of_embeddings(data, embeddings["image_embeddings"], embeddings["caption_embeddings"])

    def loss_of_embeddings(self, data, image_embeddings: tf.Tensor, caption_embeddings: tf.Tensor) -> tf.Tensor:
        """The global batch's loss from this replica's ``[b, D]`` embeddings of ``data`` (gathered first)."""
        local = [image_embeddings, caption_embeddings, data["image_id"]]
        source_key = LABEL_SOURCES.get(self.loss_kind)
        if source_key is not None:
            if source_key not in data:
                raise ValueError(
                    f"loss.kind={self.loss_kind!r} needs batches with {source_key!r} ({_SOURCE_HINTS[source_key]})"
                )
            local.append(data[source_key])  # gathered like the embeddings: labels of the global batch
        images, captions, image_ids, *label_source = gather_from_replicas(local)
        return self.ranking_loss(
            {"image_embeddings": images, "caption_embeddings": captions},
            image_ids,
            label_source[0] if label_source else None,
            chunk=self.micro_batch,
        )

    def train_step(self, data):
        if self.micro_batch:
            loss, gradients = cached_gradients(self, data, self.micro_batch)
        else:
            with tf.GradientTape() as tape:
                loss = self.global_batch_loss(data, training=True)
                scaled_loss = self.optimizer.scale_loss(loss)  # dynamic loss scaling when mixed precision
            gradients = tape.gradient(scaled_loss, self.trainable_variables)
        gradients = self._loss_scalar_gradients_once(sum_over_replicas(gradients))
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return self._logs()

    def test_step(self, data):
        self.loss_tracker.update_state(self.global_batch_loss(data, training=False))
        return self._logs()

    def _loss_scalar_gradients_once(self, gradients: list) -> list:
        """Divides the loss scalars' gradients by the number of replicas.

        A tower weight's gradient on one replica covers only that replica's rows (the
        gathered rows carry no gradient), so :func:`sum_over_replicas` adds them up. The loss
        scalars multiply every entry of the global similarity matrix: each replica already
        holds their whole gradient, which the sum would count R times.
        """
        context = tf.distribute.get_replica_context()
        if not self.loss_scalars or context is None or context.num_replicas_in_sync == 1:
            return gradients
        scalar_ids = {id(variable) for variable in self.loss_scalars.values()}
        replicas = float(context.num_replicas_in_sync)
        return [
            gradient / replicas if id(variable) in scalar_ids and gradient is not None else gradient
            for gradient, variable in zip(gradients, self.trainable_variables)
        ]

    def learned_loss_scalars(self) -> dict[str, tf.Tensor]:
        """The learned scalars as the loss uses them: InfoNCE's logit scale, SigLIP's scale and bias."""
        if "log_logit_scale" in self.loss_scalars:
            return {"logit_scale": logit_scale(self.loss_scalars["log_logit_scale"], self.max_logit_scale)}
        if "siglip_log_scale" in self.loss_scalars:
            return {
                "siglip_scale": tf.exp(tf.convert_to_tensor(self.loss_scalars["siglip_log_scale"])),
                "siglip_bias": tf.convert_to_tensor(self.loss_scalars["siglip_bias"]),
            }
        return {}

    def _logs(self) -> dict[str, tf.Tensor]:
        logs = {"loss": self.loss_tracker.result(), **self.learned_loss_scalars()}
        return {name: reducible_log(value, self.distribute_strategy) for name, value in logs.items()}

    @property
    def metrics(self):
        return [self.loss_tracker]

    def get_config(self):
        return {
            **super().get_config(),
            "image_encoder": keras.saving.serialize_keras_object(self.image_encoder),
            "text_encoder": keras.saving.serialize_keras_object(self.text_encoder),
            "margin": self.margin,
            "loss_kind": self.loss_kind,
            "pairwise_scale": self.pairwise_scale,
            "pairwise_offset": self.pairwise_offset,
            "finegrained_strength": self.finegrained_strength,
            "temperature": self.temperature,
            "max_logit_scale": self.max_logit_scale,
            "siglip_scale": self.siglip_scale,
            "siglip_bias": self.siglip_bias,
            "micro_batch": self.micro_batch,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["image_encoder"] = keras.saving.deserialize_keras_object(config["image_encoder"])
        config["text_encoder"] = keras.saving.deserialize_keras_object(config["text_encoder"])
        return cls(**config)


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Builds layers under a Keras dtype policy, restoring the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_dual_encoder(config: ExperimentConfig, vocabulary: Sequence[str]) -> DualEncoder:
    """Both towers from config, wrapped with the loss settings; not yet compiled.

    With ``train.mixed_precision`` the towers compute in float16 and keep float32
    weights; their L2-normalised outputs, and so the loss, stay float32.
    """
    with _dtype_policy("mixed_float16" if config.train.mixed_precision else "float32"):
        image_encoder = build_image_tower(config.image, config.embed_dim)
        text_encoder = build_text_tower(config.text, vocabulary, config.embed_dim)
    return DualEncoder(
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        margin=config.loss.margin,
        max_violation=config.loss.max_violation and config.loss.warmup_epochs == 0,
        loss_kind=config.loss.kind,
        pairwise_scale=config.loss.pairwise_scale,
        pairwise_offset=config.loss.pairwise_offset,
        finegrained_strength=config.loss.finegrained_strength,
        temperature=config.loss.temperature,
        max_logit_scale=config.loss.max_logit_scale,
        siglip_scale=config.loss.siglip_scale,
        siglip_bias=config.loss.siglip_bias,
        micro_batch=config.train.micro_batch,
        name="dual_encoder",
    )
