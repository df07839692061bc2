"""Benchmark: model.fit throughput on the VSE++ default shapes, and its FLOP rate.

    python bench/train.py [--steps 20] [--max_length 20]
    python bench/train.py --lengths 8:14                  # caption lengths drawn per caption
    python bench/train.py --lengths 8:14 --sort_window 8  # and batches sorted by caption length

Precomputed 4096-d image features -> 1024 projection; words 300-d -> GRU 1024; batch 128;
max-violation loss. Times the second of two fits of ``--steps`` steps (the first traces and
warms up), with and without XLA. FLOPs counted per step (multiply-add = 2): image
projection 2*B*4096*1024, GRU 2*B*L*3*(300+1024)*1024, similarity 2*B*B*1024; backward
counted as twice forward. The reference rate is a float32 2048x2048 matmul measured here.
With ``--lengths LOW:HIGH`` each step has its own batch (random features; captions of
lengths drawn uniformly from LOW..HIGH words, as sentences through the training tokenizer)
padded to its longest caption, as training pads; ``--sort_window W`` regroups each run of
W batches by caption length first (``train.length_sort_window``, the training pipeline's
function). Both fits read the same batches (cached). The counted work and tokens/s count
the real tokens only, so padding shows as a lower fraction; the table gives the padded
share of the token positions. Under XLA the batches keep these shapes (each new length
compiles once, in the first fit); training under XLA pads to ``max_length`` instead.
Prints a table (``--json``: one JSON line) and writes bench/results/train.json unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from results_file import write_results
from vsepp_shapes import BATCH, EMBED, FEATURES, GRU, WORDS, step_gflop

from vse_tf.config import ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig
from vse_tf.data.pipeline import sort_by_caption_length
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.text.tokenizer import SentenceTokenizer


def matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    """float32 matmul rate of this machine (TensorFlow's kernel, all cores)."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    product = tf.function(lambda x, y: tf.matmul(x, y))
    product(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        result = product(a, b)
    result.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def fixed_batch(rng: np.random.Generator, max_length: int, vocabulary_size: int) -> dict:
    """One batch of ``max_length`` words per caption (no padding)."""
    return {
        "image": rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
        "tokens": rng.integers(2, vocabulary_size, size=(BATCH, max_length)).astype(np.int64),
        "image_id": np.arange(BATCH, dtype=np.int64),
    }


def drawn_batches(
    steps: int, lengths: tuple[int, int], sort_window: int, vocabulary: list[str], seed: int = 0
) -> tf.data.Dataset:
    """``steps`` batches of captions with drawn lengths, through the training path: batched
    pairs -> :func:`sort_by_caption_length` -> tokenizer padding to the batch's longest."""
    rng = np.random.default_rng(seed)
    pairs = steps * BATCH
    drawn = rng.integers(lengths[0], lengths[1] + 1, size=pairs)
    captions = [" ".join(vocabulary[i] for i in rng.integers(0, len(vocabulary), size=n)) for n in drawn]
    features = rng.normal(size=(pairs, FEATURES)).astype(np.float32)
    tokenizer = SentenceTokenizer(vocabulary, lengths[1], pad_to_longest=True)
    batches = tf.data.Dataset.from_tensor_slices((features, captions, np.arange(pairs))).batch(
        BATCH, drop_remainder=True
    )
    batches = sort_by_caption_length(batches, tokenizer, sort_window, seed)
    return batches.map(
        lambda image, caption, image_id: {"image": image, "tokens": tokenizer(caption), "image_id": image_id}
    )


class StepCounter(keras.callbacks.Callback):
    """Counts the steps a fit ran (the rates divide by them)."""

    steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def fit_seconds(
    jit_compile: bool,
    steps: int,
    max_length: int,
    lengths: tuple[int, int] | None = None,
    sort_window: int = 0,
    vocabulary_size: int = 10000,
) -> tuple[float, float, float]:
    """Seconds of the timed fit, the mean real tokens per caption of its batches, and the padded share of positions."""
    config = ExperimentConfig(
        embed_dim=EMBED,
        image=ImageTowerConfig(backbone="features", feature_dim=FEATURES),
        text=TextTowerConfig(max_length=lengths[1] if lengths else max_length, word_dim=WORDS, gru_units=GRU),
        loss=LossConfig(max_violation=True),
        train=TrainConfig(batch_size=BATCH, jit_compile=jit_compile),
    )
    keras.utils.set_random_seed(0)
    vocabulary = [f"w{i}" for i in range(vocabulary_size)]
    model = build_dual_encoder(config, vocabulary)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=steps), jit_compile=jit_compile)
    if lengths is None:
        dataset = tf.data.Dataset.from_tensors(fixed_batch(np.random.default_rng(0), max_length, vocabulary_size))
        dataset = dataset.repeat(steps)
    else:
        dataset = drawn_batches(steps, lengths, sort_window, vocabulary).cache()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # traces (and compiles every length), fills the cache
    started = time.perf_counter()
    counter = StepCounter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[counter])
    seconds = time.perf_counter() - started
    if counter.steps != steps:
        raise RuntimeError(f"the timed fit ran {counter.steps} steps, not {steps}")
    tokens = [batch["tokens"].numpy() for batch in dataset]
    real = sum(int(np.count_nonzero(t)) for t in tokens)
    return seconds, real / (len(tokens) * BATCH), 1.0 - real / sum(t.size for t in tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max_length", type=int, default=20)
    parser.add_argument("--lengths", default="", help="LOW:HIGH tokens per caption, drawn per caption")
    parser.add_argument("--sort_window", type=int, default=0, help="with --lengths: train.length_sort_window")
    parser.add_argument("--xla", choices=("both", "off", "on"), default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/train.json")
    args = parser.parse_args(argv)
    lengths = tuple(int(part) for part in args.lengths.split(":")) if args.lengths else None
    peak = matmul_gflops()
    rows = []
    for jit_compile in {"both": (False, True), "off": (False,), "on": (True,)}[args.xla]:
        seconds, tokens_per_caption, padding = fit_seconds(
            jit_compile, args.steps, args.max_length, lengths, args.sort_window
        )
        flop = step_gflop(tokens_per_caption)
        steps_per_second = args.steps / seconds
        achieved = flop * steps_per_second
        rows.append(
            {
                "xla": jit_compile,
                "steps_per_s": steps_per_second,
                "pairs_per_s": steps_per_second * BATCH,
                "tokens_per_s": steps_per_second * BATCH * tokens_per_caption,
                "tokens_per_caption": tokens_per_caption,
                "padded_fraction": padding,
                "gflop_per_step": flop,
                "achieved_gflops": achieved,
                "fraction_of_matmul": achieved / peak,
            }
        )
    result = {
        "tensorflow": tf.__version__,
        "matmul_gflops": peak,
        "max_length": args.max_length,
        "lengths": args.lengths,
        "sort_window": args.sort_window,
        "steps": args.steps,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"float32 matmul 2048^2: {peak:.1f} GFLOP/s; counted work {rows[0]['gflop_per_step']:.1f} GFLOP per step")
        print(
            f"{'XLA':<5} {'steps/s':>8} {'pairs/s':>9} {'tokens/s':>9} {'padded':>7} {'GFLOP/s':>9} {'of matmul':>10}"
        )
        for row in rows:
            print(
                f"{str(row['xla']):<5} {row['steps_per_s']:8.2f} {row['pairs_per_s']:9.0f} {row['tokens_per_s']:9.0f} "
                f"{100 * row['padded_fraction']:6.0f}% {row['achieved_gflops']:9.1f} "
                f"{100 * row['fraction_of_matmul']:9.0f}%"
            )
    if not args.no_write:
        path = write_results("train", result)
        if not args.json:
            print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
