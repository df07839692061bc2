"""Benchmark: peak memory and compute per pair of big batches, with and without gradient caching.

    python bench/gradcache.py                     # the default cases, each in a fresh process
    python bench/gradcache.py --case 8192:512     # one case in this process (global:micro, micro 0 = plain)

Precomputed image features (512-d) and a GRU text tower (word_dim 128, 256 units, captions
of 12 tokens), embed 256, InfoNCE, Adam. Each case runs in a fresh Python process: one
warm-up step, then ``--steps`` timed steps; peak RSS is the process's maximum resident set
(``ru_maxrss``, TensorFlow's own start-up included). Writes ``bench/results/gradcache.json``
with ``"rows": [{"global_batch", "micro_batch", "peak_rss_mb", "seconds_per_pair"}, ...]``
(``micro_batch`` null for the plain step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = ("512:0", "2048:0", "8192:0", "2048:512", "8192:512")
FEATURES, LENGTH, VOCABULARY = 512, 12, 2000


def run_case(global_batch: int, micro_batch: int, steps: int) -> dict:
    """Times ``steps`` training steps of one batch size in this process."""
    import keras
    import numpy as np
    import tensorflow as tf

    from vse_tf.config import ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig
    from vse_tf.model.dual_encoder import build_dual_encoder

    config = ExperimentConfig(
        embed_dim=256,
        image=ImageTowerConfig(backbone="features", feature_dim=FEATURES),
        text=TextTowerConfig(max_length=LENGTH, word_dim=128, gru_units=256),
        loss=LossConfig(kind="infonce"),
        train=TrainConfig(micro_batch=micro_batch),
    )
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, [f"w{i}" for i in range(VOCABULARY)])
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    rng = np.random.default_rng(0)
    batch = {
        "image": tf.constant(rng.normal(size=(global_batch, FEATURES)).astype(np.float32)),
        "tokens": tf.constant(rng.integers(2, VOCABULARY, size=(global_batch, LENGTH)).astype(np.int64)),
        "image_id": tf.range(global_batch, dtype=tf.int64),
    }
    step = tf.function(model.train_step)
    step(batch)  # trace and warm up
    started = time.perf_counter()
    for _ in range(steps):
        logs = step(batch)
    float(logs["loss"])
    seconds = (time.perf_counter() - started) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes
    return {
        "global_batch": global_batch,
        "micro_batch": micro_batch or None,
        "peak_rss_mb": round(peak_mb, 1),
        "seconds_per_step": seconds,
        "seconds_per_pair": seconds / global_batch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help="GLOBAL:MICRO, run in this process and print one JSON line")
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.case:
        global_batch, micro_batch = map(int, args.case.split(":"))
        print(json.dumps(run_case(global_batch, micro_batch, args.steps)))
        return 0
    rows = []
    for case in args.cases:
        command = [sys.executable, __file__, "--case", case, "--steps", str(args.steps)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"batch {row['global_batch']:>6}  micro {row['micro_batch'] or '-':>5}"
            f"  peak RSS {row['peak_rss_mb']:8.1f} MB  {row['seconds_per_step']:7.2f} s/step"
            f"  {1e6 * row['seconds_per_pair']:8.1f} us/pair",
            flush=True,
        )
    import tensorflow as tf
    from results_file import write_results

    path = write_results("gradcache", {"tensorflow": tf.__version__, "steps": args.steps, "rows": rows})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
