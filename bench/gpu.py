"""Benchmark for one GPU: training steps/s and pairs/s, and the exported towers' latency.

    python bench/gpu.py                       # on a machine with one NVIDIA GPU
    python bench/gpu.py --tiny --allow_cpu    # tiny shapes on the CPU (the tests run this)

Install on the GPU machine: ``pip install 'tensorflow[and-cuda]==2.21.0'`` in the project's
venv (after ``make install``), then run the first line. Without a GPU (and without
``--allow_cpu``) it prints why and exits 0.

Cases: the VSE++ shapes (precomputed 4096-d features -> 1024; 300-d words -> GRU 1024;
max-violation loss), in float32 and mixed precision (``mixed_float16``), XLA off and on,
at global batch 128 and 1,024, captions of 8 to 14 tokens. MiniLM fine-tuning rows are not
part of it yet. A case times the second of two fits of ``--steps`` steps (the first traces
and compiles). Then both towers of the VSE++-shape model are exported and reloaded as
SavedModels and timed at batch 1 and 64 (median and 99th percentile of ``--calls``).
Prints a table and writes ``bench/results/gpu.json`` (``--results`` to name another file).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from results_file import write_results

from vse_tf.config import (
    ExperimentConfig,
    ImageTowerConfig,
    LossConfig,
    TextTowerConfig,
    TrainConfig,
)
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.serving.export import export_towers
from vse_tf.text.tokenizer import SentenceTokenizer


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Sizes of one benchmark setting."""

    features: int
    embed: int
    words: int
    gru: int
    vocabulary: int
    batches: tuple[int, ...]
    lengths: tuple[int, int]


FULL = Shapes(features=4096, embed=1024, words=300, gru=1024, vocabulary=10000, batches=(128, 1024), lengths=(8, 14))
TINY = Shapes(features=32, embed=16, words=8, gru=16, vocabulary=50, batches=(8, 16), lengths=(3, 6))


def model_config(shapes: Shapes, batch: int, mixed: bool, xla: bool) -> ExperimentConfig:
    text = TextTowerConfig(max_length=shapes.lengths[1], word_dim=shapes.words, gru_units=shapes.gru)
    return ExperimentConfig(
        embed_dim=shapes.embed,
        image=ImageTowerConfig(backbone="features", feature_dim=shapes.features),
        text=text,
        loss=LossConfig(max_violation=True),
        train=TrainConfig(batch_size=batch, mixed_precision=mixed, jit_compile=xla),
    )


def sentences(shapes: Shapes, count: int, rng: np.random.Generator) -> list[str]:
    """Captions of ``lengths[0]`` to ``lengths[1]`` words drawn from the vocabulary."""
    low, high = shapes.lengths
    return [
        " ".join(f"w{i}" for i in rng.integers(0, shapes.vocabulary, rng.integers(low, high + 1))) for _ in range(count)
    ]


def training_batches(shapes: Shapes, config: ExperimentConfig, steps: int, rng) -> tf.data.Dataset:
    tokenizer = SentenceTokenizer([f"w{i}" for i in range(shapes.vocabulary)], config.text.max_length)
    batch = config.train.batch_size
    element = {
        "image": rng.normal(size=(batch, shapes.features)).astype(np.float32),
        "tokens": tokenizer(tf.constant(sentences(shapes, batch, rng))).numpy(),
        "image_id": np.arange(batch, dtype=np.int64),
    }
    return tf.data.Dataset.from_tensors(element).repeat(steps)


def time_training(shapes: Shapes, batch: int, mixed: bool, xla: bool, steps: int) -> dict:
    """Steps/s and pairs/s of one case (the second of two fits)."""
    config = model_config(shapes, batch, mixed, xla)
    keras.utils.set_random_seed(0)
    dataset = training_batches(shapes, config, steps, np.random.default_rng(0))
    model = build_dual_encoder(config, [f"w{i}" for i in range(shapes.vocabulary)])
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=steps), jit_compile=xla)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    return {
        "model": "vsepp",
        "batch": batch,
        "precision": "mixed_float16" if mixed else "float32",
        "xla": xla,
        "steps_per_s": steps / seconds,
        "pairs_per_s": steps * batch / seconds,
    }


def time_serving(shapes: Shapes, calls: int) -> list[dict]:
    """Latency of the exported VSE++-shape towers at batch 1 and 64, reloaded as SavedModels."""
    config = model_config(shapes, shapes.batches[0], mixed=False, xla=False)
    vocabulary = [f"w{i}" for i in range(shapes.vocabulary)]
    model = build_dual_encoder(config, vocabulary)
    tokenizer = SentenceTokenizer(vocabulary, config.text.max_length)
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, Path(directory))
        text = tf.saved_model.load(str(paths["text_encoder"])).signatures["serving_default"]
        image = tf.saved_model.load(str(paths["image_encoder"])).signatures["serving_default"]
        for batch in (1, 64):
            requests = {
                "text_encoder": lambda b=batch: text(sentences=tf.constant(sentences(shapes, b, rng))),
                "image_encoder": lambda b=batch: image(
                    features=tf.constant(rng.normal(size=(b, shapes.features)).astype(np.float32))
                ),
            }
            for name, request in requests.items():
                rows.append({"tower": name, "batch": batch, **latency(request, calls)})
    return rows


def latency(request, calls: int) -> dict:
    for _ in range(3):
        request()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        request()
        seconds.append(time.perf_counter() - started)
    return {"p50_ms": 1000 * float(np.percentile(seconds, 50)), "p99_ms": 1000 * float(np.percentile(seconds, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (for the test suite)")
    parser.add_argument("--allow_cpu", action="store_true", help="run even without a GPU")
    parser.add_argument("--results", default="gpu", help="bench/results/<NAME>.json")
    parser.add_argument("--results_dir", default="", help="write the results file here instead")
    args = parser.parse_args(argv)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        print("bench/gpu.py: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty);")
        print("install 'tensorflow[and-cuda]==2.21.0' on a machine with an NVIDIA GPU, or pass --allow_cpu.")
        return 0
    shapes = TINY if args.tiny else FULL
    rows = []
    for batch in shapes.batches:
        for mixed in (False, True):
            for xla in (False, True):
                rows.append(time_training(shapes, batch, mixed, xla, args.steps))
                print(format_row(rows[-1]), flush=True)
    serving = time_serving(shapes, args.calls)
    for row in serving:
        print(f"{row['tower']:<14} batch {row['batch']:>3}: p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms")
    device = gpus[0].name if gpus else "CPU"
    payload = {"device": device, "tiny": args.tiny, "tensorflow": tf.__version__, "training": rows, "serving": serving}
    directory = Path(args.results_dir) if args.results_dir else None
    print(f"results: {write_results(args.results, payload, directory)}")
    return 0


def format_row(row: dict) -> str:
    return (
        f"{row['model']:<7} batch {row['batch']:>5} {row['precision']:<14} XLA {str(row['xla']):<5} "
        f"{row['steps_per_s']:8.2f} steps/s {row['pairs_per_s']:10.0f} pairs/s"
    )


if __name__ == "__main__":
    sys.exit(main())
