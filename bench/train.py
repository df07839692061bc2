"""Benchmark: model.fit throughput on the VSE++ default shapes, and its FLOP rate.

    python bench/train.py [--steps 20] [--max_length 20]
    python bench/train.py --lengths 8:14        # caption lengths drawn per caption, as VSE++'s bench

Precomputed 4096-d image features -> 1024 projection; words 300-d -> GRU 1024; batch 128;
max-violation loss. Times the second of two fits of ``--steps`` steps (the first traces and
warms up), with and without XLA. FLOPs counted per step (multiply-add = 2): image
projection 2*B*4096*1024, GRU 2*B*L*3*(300+1024)*1024, similarity 2*B*B*1024; backward
counted as twice forward. The reference rate is a float32 2048x2048 matmul measured here.
With ``--lengths LOW:HIGH`` each caption has a length drawn uniformly from LOW..HIGH tokens
and each batch is padded to its longest caption (as training pads); the counted work and
tokens/s then count the real tokens only, so padding shows as a lower fraction.
Prints a table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from results_file import write_results

from vse_tf.config import ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer

BATCH, FEATURES, EMBED, WORDS, GRU = 128, 4096, 1024, 300, 1024


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


def step_gflop(tokens_per_caption: float) -> float:
    """Counted work of one step for captions of this mean length (real tokens, no padding)."""
    forward = (
        2 * BATCH * FEATURES * EMBED
        + 2 * BATCH * tokens_per_caption * 3 * (WORDS + GRU) * GRU
        + 2 * BATCH * BATCH * EMBED
    )
    return 3 * forward / 1e9


def token_batch(rng: np.random.Generator, max_length: int, lengths: tuple[int, int] | None, vocabulary_size: int):
    """``int64 [BATCH, L]``: fixed ``max_length`` words, or lengths drawn from ``lengths`` padded to the longest."""
    if lengths is None:
        return rng.integers(2, vocabulary_size, size=(BATCH, max_length)).astype(np.int64)
    drawn = rng.integers(lengths[0], lengths[1] + 1, size=BATCH)
    tokens = np.zeros((BATCH, drawn.max()), dtype=np.int64)
    for row, length in enumerate(drawn):
        tokens[row, :length] = rng.integers(2, vocabulary_size, size=length)
    return tokens


def fit_seconds(
    jit_compile: bool, steps: int, max_length: int, lengths: tuple[int, int] | None = None, vocabulary_size: int = 10000
) -> tuple[float, float]:
    """Seconds of the timed fit, and the mean real tokens per caption of its batches."""
    config = ExperimentConfig(
        embed_dim=EMBED,
        image=ImageTowerConfig(backbone="features", feature_dim=FEATURES),
        text=TextTowerConfig(max_length=max_length, word_dim=WORDS, gru_units=GRU),
        loss=LossConfig(max_violation=True),
        train=TrainConfig(batch_size=BATCH, jit_compile=jit_compile),
    )
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, [f"w{i}" for i in range(vocabulary_size)])
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=steps), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
        "tokens": token_batch(rng, max_length, lengths, vocabulary_size),
        "image_id": np.arange(BATCH, dtype=np.int64),
    }
    dataset = tf.data.Dataset.from_tensors(batch).repeat(steps)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - started, float(np.count_nonzero(batch["tokens"])) / BATCH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max_length", type=int, default=20)
    parser.add_argument("--lengths", default="", help="LOW:HIGH tokens per caption, drawn per caption")
    args = parser.parse_args(argv)
    lengths = tuple(int(part) for part in args.lengths.split(":")) if args.lengths else None
    peak = matmul_gflops()
    rows = []
    for jit_compile in (False, True):
        seconds, tokens_per_caption = fit_seconds(jit_compile, args.steps, args.max_length, lengths)
        flop = step_gflop(tokens_per_caption)
        steps_per_second = args.steps / seconds
        achieved = flop * steps_per_second
        rows.append(
            {
                "xla": jit_compile,
                "steps_per_s": steps_per_second,
                "pairs_per_s": steps_per_second * BATCH,
                "tokens_per_s": steps_per_second * BATCH * tokens_per_caption,
                "gflop_per_step": flop,
                "achieved_gflops": achieved,
                "fraction_of_matmul": achieved / peak,
            }
        )
    print(f"float32 matmul 2048^2: {peak:.1f} GFLOP/s; counted work {rows[0]['gflop_per_step']:.1f} GFLOP per step")
    print(f"{'XLA':<5} {'steps/s':>8} {'pairs/s':>9} {'tokens/s':>9} {'GFLOP/s':>9} {'of matmul':>10}")
    for row in rows:
        print(
            f"{str(row['xla']):<5} {row['steps_per_s']:8.2f} {row['pairs_per_s']:9.0f} {row['tokens_per_s']:9.0f} "
            f"{row['achieved_gflops']:9.1f} {100 * row['fraction_of_matmul']:9.0f}%"
        )
    results = write_results(
        "train",
        {
            "tensorflow": tf.__version__,
            "matmul_gflops": peak,
            "max_length": args.max_length,
            "lengths": args.lengths,
            "steps": args.steps,
            "rows": rows,
        },
    )
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
