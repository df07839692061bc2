"""Benchmark: evaluate_retrieval against the bare similarity matmul of the same size.

    python bench/eval.py                      # 5,000 images x 25,000 captions, d=1024
    python bench/eval.py --huge               # also 100,000 x 500,000 (d=64 by default)

Random unit embeddings, float32, five captions per image. Each case runs in a fresh
subprocess so its peak resident memory (ru_maxrss) is its own. Prints a table and writes
bench/results/eval.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from results_file import write_results


def unit_rows(rng: np.random.Generator, rows: int, dim: int, chunk: int = 65536) -> np.ndarray:
    """Random unit vectors, generated in chunks so the float64 temporaries stay small."""
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, chunk):
        block = rng.standard_normal((min(chunk, rows - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def run_case(kind: str, images: int, captions: int, dim: int, repeats: int, folds: int) -> dict:
    """One measurement in this process: 'matmul' or 'evaluate'."""
    from vse_tf.evaluation.metrics import evaluate_retrieval

    rng = np.random.default_rng(0)
    image_embeddings = unit_rows(rng, images, dim)
    caption_embeddings = unit_rows(rng, captions, dim)
    owner = np.arange(captions) % images
    inputs_rss = _peak_rss_mb()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        if kind == "matmul":
            scores = image_embeddings @ caption_embeddings.T
            del scores
        else:
            evaluate_retrieval(
                image_embeddings, caption_embeddings, owner, folds=folds, progress=images * captions > 10**10
            )
        seconds.append(time.perf_counter() - started)
    return {
        "kind": kind,
        "images": images,
        "captions": captions,
        "dim": dim,
        "folds": folds,
        "best_seconds": min(seconds),
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_inputs_mb": inputs_rss,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(kind: str, images: int, captions: int, dim: int, repeats: int, folds: int = 1) -> dict:
    """Runs one case in a fresh interpreter and returns its result."""
    command = [sys.executable, __file__, "--case", kind, "--images", str(images), "--captions", str(captions)]
    command += ["--dim", str(dim), "--repeats", str(repeats), "--folds", str(folds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions", type=int, default=25000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--huge", action="store_true", help="also run 100,000 images x 500,000 captions")
    parser.add_argument("--huge_dim", type=int, default=64)
    parser.add_argument("--case", choices=("matmul", "evaluate"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.images, args.captions, args.dim, args.repeats, args.folds)))
        return 0

    size = (args.images, args.captions, args.dim, args.repeats)
    rows = [measure("matmul", *size), measure("evaluate", *size), measure("evaluate", *size, folds=5)]
    if args.huge:
        rows.append(measure("evaluate", 100_000, 500_000, args.huge_dim, 1))
    matmul = rows[0]["best_seconds"]
    print(f"{'case':<34} {'best s':>8} {'x matmul':>9} {'peak RSS MB':>12}")
    for row in rows:
        name = f"{row['kind']} {row['images']}x{row['captions']} d={row['dim']}"
        name += f" folds={row['folds']}" if row["folds"] > 1 else ""
        ratio = (
            row["best_seconds"] / matmul if row["dim"] == args.dim and row["images"] == args.images else float("nan")
        )
        print(f"{name:<34} {row['best_seconds']:8.2f} {ratio:9.2f} {row['peak_rss_mb']:12.0f}")
    results = write_results(
        "eval",
        {"numpy": np.__version__, "rows": rows},
    )
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
