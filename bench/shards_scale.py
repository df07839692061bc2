"""Benchmark: peak memory of training from TFRecord shards against the dataset size.

    python bench/shards_scale.py [--pairs 20000 200000] [--feature_dim 16] [--shard_records 10000]

For each size, generates that many (feature row, caption) pairs in the ``precomp`` layout
(random ``float32`` rows, captions of 8 words from a 40-word list), converts them to shards
(:func:`vse_tf.data.shards.write_shards`) and trains one epoch from the shards (batches of
128, ``image.backbone=features``, a small GRU text tower), then, for comparison, one epoch
from the source layout (every record in memory). Each step runs in its own process; the
peak resident set size (``ru_maxrss``) of each is reported. Prints a table and writes
bench/results/shards_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import write_results

WORDS = (
    "a an the red green blue small big dog cat bird horse man woman child car bus train on under near left right "
    "top bottom park street field water snow grass running sitting standing with and of in at beside behind"
).split()


def generate(directory: Path, pairs: int, feature_dim: int, seed: int = 0) -> None:
    """``train_ims.npy`` (``float32 [pairs, feature_dim]``) and ``train_caps.txt``, one caption a row."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "train_ims.npy", rng.normal(size=(pairs, feature_dim)).astype(np.float32))
    words = np.asarray(WORDS)[rng.integers(0, len(WORDS), size=(pairs, 8))]
    (directory / "train_caps.txt").write_text("\n".join(" ".join(row) for row in words) + "\n")


def experiment(source: Path, run_dir: Path, feature_dim: int, shards: Path | None):
    from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig, TextTowerConfig, TrainConfig

    data = (
        DataConfig(format="tfrecord", data_dir=str(shards))
        if shards
        else DataConfig(format="precomp", data_dir=str(source))
    )
    return ExperimentConfig(
        embed_dim=16,
        data=data,
        image=ImageTowerConfig(backbone="features", feature_dim=feature_dim),
        text=TextTowerConfig(max_length=8, word_dim=16, gru_units=16),
        train=TrainConfig(run_dir=str(run_dir), epochs=1, batch_size=128, lr_decay_epochs=0),
    )


def child(step: str, source: Path, out: Path, feature_dim: int, shard_records: int) -> dict:
    """One measured step in this process: ``write`` shards, ``train_shards`` or ``train_source``."""
    started = time.perf_counter()
    result: dict = {}
    if step == "write":
        from vse_tf.data.shards import write_shards

        report = write_shards(experiment(source, out / "run", feature_dim, None), out / "shards", shard_records)
        result["splits"] = {name: entry["images"] for name, entry in report.manifest["splits"].items()}
    else:
        from vse_tf.training.trainer import train

        shards = out / "shards" if step == "train_shards" else None
        run = train(experiment(source, out / step, feature_dim, shards), verbose=0)
        result["optimizer_steps"] = int(run.model.optimizer.iterations.numpy())
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--feature_dim", type=int, default=16)
    parser.add_argument("--shard_records", type=int, default=10_000)
    parser.add_argument("--child", nargs=3, metavar=("STEP", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step, source, out = args.child
        print(json.dumps(child(step, Path(source), Path(out), args.feature_dim, args.shard_records)))
        return 0
    rows = {}
    with tempfile.TemporaryDirectory() as temporary:
        for pairs in args.pairs:
            source, out = Path(temporary) / f"source_{pairs}", Path(temporary) / f"out_{pairs}"
            generate(source, pairs, args.feature_dim)
            rows[pairs] = {}
            for step in ("write", "train_shards", "train_source"):
                command = [sys.executable, __file__, "--feature_dim", str(args.feature_dim), "--shard_records",
                           str(args.shard_records), "--child", step, str(source), str(out)]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ.copy())
                rows[pairs][step] = json.loads(done.stdout.strip().splitlines()[-1])
                print(pairs, step, rows[pairs][step], flush=True)
    print(f"\n{'pairs':>8} {'step':<14} {'peak RSS MiB':>13} {'seconds':>8} {'steps':>6}")
    for pairs, steps in rows.items():
        for step, result in steps.items():
            print(f"{pairs:>8} {step:<14} {result['peak_rss_mb']:13.0f} {result['seconds']:8.1f} "
                  f"{result.get('optimizer_steps', ''):>6}")  # fmt: skip
    payload = {
        "command": "python bench/shards_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "feature_dim": args.feature_dim,
        "shard_records": args.shard_records,
        "cpu_count": os.cpu_count(),
        "rows": {str(pairs): steps for pairs, steps in rows.items()},
    }
    print(f"results: {write_results('shards_scale', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
