"""Benchmark: serving latency of the exported towers against bare Keras, and top-k over a gallery.

    python bench/serve.py [--run runs/demo] [--repeats 200] [--gallery 1000000] [--text_encoder minilm]

Without --run the towers are the demo's architecture with random weights (latency does
not depend on the weights); ``--text_encoder minilm`` swaps in the pretrained MiniLM text
tower (frozen, max length 64). For each case: p50/p99 milliseconds of the reloaded
SavedModel signature and of the same Keras towers called directly (eagerly, and inside a
tf.function, the fairer graph-to-graph comparison). Then brute-force top-10 over a gallery
of unit vectors: the retrieval graph (matmul + tf.math.top_k) and NumPy
(matmul + argpartition). Prints a table and writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from results_file import write_results

# bench/train.py, first on the path when this file runs, would shadow the project's train package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.demo import demo_config  # noqa: E402
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.serving.export import export_towers
from vse_tf.serving.index import top_k
from vse_tf.text.towers import build_tokenizer, text_vocabulary
from vse_tf.training.run import restore_run

SENTENCE = "there is a big blue star to the right of a little red circle"


def latency_ms(call, repeats: int) -> dict[str, float]:
    """p50/p99 of ``call()`` in milliseconds, after three warm-up calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def towers(run_dir: str | None, text_encoder: str = "gru"):
    if run_dir:
        run = restore_run(run_dir)
        return run.config, run.tokenizer, run.model
    config = demo_config("unused", "unused", epochs=1)
    if text_encoder == "minilm":
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, encoder="minilm", max_length=64))
    vocabulary = text_vocabulary(config.text, [SENTENCE, "a small red circle left of a big blue star above below"])
    return config, build_tokenizer(config.text, vocabulary), build_dual_encoder(config, vocabulary)


def gallery_rows(dim: int, items: int, repeats: int, rng: np.random.Generator) -> list[tuple]:
    """Brute-force top-10 over ``items`` random unit vectors: the TF graph and NumPy."""
    gallery = rng.standard_normal((items, dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[:1] + 0.01
    variable = tf.Variable(gallery)
    graph_top_k = tf.function(lambda q: tf.math.top_k(tf.matmul(q, variable, transpose_b=True), k=10))
    repeats = max(5, repeats // 10)
    return [
        ("top-10", items, f"TF matmul + top_k (d={dim})", latency_ms(lambda: graph_top_k(tf.constant(query)), repeats)),
        (
            "top-10",
            items,
            f"NumPy matmul + argpartition (d={dim})",
            latency_ms(lambda: top_k(query, gallery, 10), repeats),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained run directory (default: demo architecture, random weights)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--text_encoder", default="gru", choices=("gru", "minilm"), help="without --run")
    args = parser.parse_args(argv)
    config, tokenizer, model = towers(args.run, args.text_encoder)
    size = config.image.image_size
    rows = []
    with tempfile.TemporaryDirectory() as models_dir:
        paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, models_dir)
        text = tf.saved_model.load(str(paths["text_encoder"])).signatures["serving_default"]
        image = tf.saved_model.load(str(paths["image_encoder"]))
        keras_text = tf.function(lambda s: model.text_encoder(tokenizer(s), training=False))
        keras_image = tf.function(lambda p: model.image_encoder(p, training=False))
        for batch in (1, 64):
            sentences = tf.constant([SENTENCE] * batch)
            rows.append(
                (
                    "text",
                    batch,
                    "SavedModel serving_default",
                    latency_ms(lambda s=sentences: text(sentences=s), args.repeats),
                )
            )
            rows.append(
                ("text", batch, "Keras tf.function", latency_ms(lambda s=sentences: keras_text(s), args.repeats))
            )
            rows.append(
                (
                    "text",
                    batch,
                    "Keras eager call",
                    latency_ms(lambda s=sentences: model.text_encoder(tokenizer(s)), args.repeats),
                )
            )
        rng = np.random.default_rng(0)
        for batch in (1, 16):
            pixels = tf.constant(rng.integers(0, 255, (batch, size, size, 3)).astype(np.float32))
            encoded = tf.constant([tf.io.encode_jpeg(tf.cast(p, tf.uint8)).numpy() for p in pixels])
            pixel_signature = image.signatures["pixels"]
            byte_signature = image.signatures["serving_default"]
            rows.append(
                (
                    "image",
                    batch,
                    "SavedModel pixels",
                    latency_ms(lambda f=pixel_signature, p=pixels: f(pixels=p), args.repeats),
                )
            )
            rows.append(
                (
                    "image",
                    batch,
                    "SavedModel JPEG bytes",
                    latency_ms(lambda f=byte_signature, e=encoded: f(images=e), args.repeats),
                )
            )
            rows.append(
                ("image", batch, "Keras tf.function", latency_ms(lambda p=pixels: keras_image(p), args.repeats))
            )
            rows.append(
                ("image", batch, "Keras eager call", latency_ms(lambda p=pixels: model.image_encoder(p), args.repeats))
            )

    if args.gallery:
        rows += gallery_rows(config.embed_dim, args.gallery, args.repeats, rng)

    print(f"{'tower':<7} {'batch':>8}  {'path':<40} {'p50 ms':>8} {'p99 ms':>8}")
    for tower, batch, path, timing in rows:
        print(f"{tower:<7} {batch:>8}  {path:<40} {timing['p50_ms']:8.2f} {timing['p99_ms']:8.2f}")
    results = write_results(
        "serve" if args.run or args.text_encoder == "gru" else f"serve_{args.text_encoder}",
        {
            "tensorflow": tf.__version__,
            "run": args.run or "demo architecture, random weights",
            "rows": [{"tower": t, "batch": b, "path": p, **timing} for t, b, p, timing in rows],
        },
    )
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
