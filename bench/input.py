"""Benchmark: images/s of the vse_tf input pipeline against raw ``tf.io.decode_jpeg`` on the same files.

    python bench/input.py [--images 2000] [--width 500 --height 375] [--image_sizes 224 64] [--repeats 5]

Writes ``--images`` JPEGs (smooth colour fields with noise, about the size of Flickr/COCO
photos; ``--dir`` reuses a folder) and times full passes over them, each case with the
same ``num_parallel_calls`` (``--parallel``, default AUTOTUNE), batches of 64 and a prefetch:

- raw decode: ``read_file -> decode_jpeg``;
- raw decode + resize: the same plus the pipeline's resize (``tf.image.resize``,
  antialias, rounded to uint8);
- vse_tf training images: :func:`vse_tf.data.pipeline.training_images` (decode_image +
  resize, the safety net, the decode tracker, captions and ids; no cache), the stage
  the training batches are made from;
- vse_tf screening: :func:`vse_tf.data.screening.screen_records` (header and end-marker
  checks in Python threads), run once per split before training;
- vse_tf TFRecord shards: the same JPEGs written by :func:`vse_tf.data.shards.write_shards`
  (``--shard_records`` images a shard), streamed by the ``tfrecord`` reader (interleave,
  parse, the same decode + resize, captions and ids);
- vse_tf tf.data service: the shard stream processed by ``--service_workers`` local
  tf.data service workers (``distributed_epoch``), received by this process.

A warm-up pass first puts the files in the page cache; the cases take turns for
``--repeats`` rounds and each reports its best pass. Prints a table and writes bench/results/input.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from results_file import write_results

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig
from vse_tf.data.pipeline import DecodeTracker, training_images
from vse_tf.data.records import CaptionRecord, group_by_image
from vse_tf.data.screening import screen_records
from vse_tf.data.service import distribute_to_service, start_dispatcher, start_worker
from vse_tf.data.shards import write_shards
from vse_tf.data.skips import SkipLog
from vse_tf.data.splits import load_splits

BATCH = 64


def write_jpegs(directory: Path, count: int, width: int, height: int, seed: int = 0) -> list[str]:
    """``count`` photo-sized JPEGs (quality 90): colour gradients, blobs and noise."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for index in range(count):
        path = directory / f"img_{index:05d}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        base = rng.uniform(0, 255, size=3)
        slope = rng.uniform(-0.4, 0.4, size=(2, 3))
        pixels = base + rows[..., None] * slope[0] + columns[..., None] * slope[1]
        centre = rng.uniform([0, 0], [height, width])
        blob = np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * rng.uniform(20, 80) ** 2))
        pixels += blob[..., None] * rng.uniform(-120, 120, size=3)
        pixels += rng.normal(0, 12, size=pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return paths


def seconds_per_pass(dataset: tf.data.Dataset) -> float:
    started = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - started


def best_rates(cases: dict[str, tf.data.Dataset], count: int, repeats: int) -> dict[str, float]:
    """Images/s of each case's best pass; the cases take turns, so a busy moment of the
    shared machine does not land on one case only."""
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, dataset in cases.items():
            best[name] = min(best[name], seconds_per_pass(dataset))
    return {name: count / seconds for name, seconds in best.items()}


def raw_dataset(paths: list[str], parallel: int, image_size: int | None) -> tf.data.Dataset:
    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        if image_size is None:
            return tf.shape(image)  # decoded, not resized; a small output keeps batching out of the timing
        resized = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    dataset = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=parallel, deterministic=True)
    return dataset.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def pipeline_dataset(paths: list[str], parallel: int, image_size: int) -> tf.data.Dataset:
    records = [CaptionRecord(path, f"caption of image {index}", index, "train") for index, path in enumerate(paths)]
    split = group_by_image(records)
    config = ExperimentConfig(
        data=DataConfig(cache_images=False),
        image=ImageTowerConfig(image_size=image_size),
    )
    tracker = DecodeTracker(split.image_refs)
    images = training_images(split, config, tracker)
    return images.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def write_jpeg_shards(directory: Path, paths: list[str], out: Path, shard_records: int) -> Path:
    """The JPEGs as one training split of TFRecord shards (through a JSONL caption table)."""
    lines = [json.dumps({"image": Path(path).name, "caption": f"caption of image {i}"}) for i, path in enumerate(paths)]
    (directory / "captions.jsonl").write_text("\n".join(lines) + "\n")
    source = DataConfig(
        format="jsonl", data_dir=str(directory), image_root=str(directory), val_fraction=0.0, test_fraction=0.0
    )
    write_shards(ExperimentConfig(data=source), out, shard_records)
    return out


def shard_dataset(shards: Path, image_size: int, service: str = "") -> tf.data.Dataset:
    config = ExperimentConfig(
        data=DataConfig(format="tfrecord", data_dir=str(shards), service=service),
        image=ImageTowerConfig(image_size=image_size),
    )
    split = load_splits(config, ("train",), SkipLog())["train"]
    batches = training_images(split, config).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    return distribute_to_service(batches, config.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[224, 64], help="sides to resize to")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=tf.data.AUTOTUNE, help="num_parallel_calls (-1: AUTOTUNE)")
    parser.add_argument("--dir", help="folder for the JPEGs (default: a temporary folder)")
    parser.add_argument("--shard_records", type=int, default=250, help="images per TFRecord shard")
    parser.add_argument("--service_workers", type=int, default=2, help="local tf.data service workers (0: no row)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(args.dir or temporary)
        started = time.perf_counter()
        paths = write_jpegs(directory, args.images, args.width, args.height)
        print(f"{len(paths)} JPEGs {args.width}x{args.height} in {directory} ({time.perf_counter() - started:.1f} s)")
        mean_bytes = float(np.mean([os.path.getsize(path) for path in paths]))
        shards = write_jpeg_shards(directory, paths, Path(temporary) / "shards", args.shard_records)
        dispatcher = start_dispatcher() if args.service_workers else None
        workers = [start_worker(dispatcher.target) for _ in range(args.service_workers)]
        cases = {"raw decode_jpeg": raw_dataset(paths, args.parallel, None)}
        for size in args.image_sizes:
            cases[f"raw decode_jpeg + resize {size}"] = raw_dataset(paths, args.parallel, size)
            cases[f"vse_tf training_images {size}"] = pipeline_dataset(paths, args.parallel, size)
            cases[f"vse_tf TFRecord shards {size}"] = shard_dataset(shards, size)
            if workers:
                cases[f"vse_tf tf.data service, {len(workers)} workers, {size}"] = shard_dataset(
                    shards, size, dispatcher.target
                )
        for dataset in cases.values():  # warm-up: page cache, tf.function tracing
            for _ in dataset.take(2):
                pass
        seconds_per_pass(cases["raw decode_jpeg"])
        rates = best_rates(cases, len(paths), args.repeats)
        records = [CaptionRecord(path, "x", index, "train") for index, path in enumerate(paths)]
        started = time.perf_counter()
        screen_records(records, SkipLog())
        rates["vse_tf screening (once per run)"] = len(paths) / (time.perf_counter() - started)
    raw = rates["raw decode_jpeg"]
    versus = {}
    for size in args.image_sizes:
        pipeline, baseline = rates[f"vse_tf training_images {size}"], rates[f"raw decode_jpeg + resize {size}"]
        versus[str(size)] = {
            "vs_raw_decode": pipeline / raw,
            "vs_raw_decode_resize": pipeline / baseline,
            "shards_vs_in_memory": rates[f"vse_tf TFRecord shards {size}"] / pipeline,
        }
        service = f"vse_tf tf.data service, {args.service_workers} workers, {size}"
        if service in rates:
            versus[str(size)]["service_vs_in_memory"] = rates[service] / pipeline
    print(f"\n{'case':<44} {'images/s':>9} {'vs raw decode':>14}")
    print("-" * 69)
    for name, rate in rates.items():
        print(f"{name:<44} {rate:9.1f} {rate / raw:14.2f}")
    for size, ratios in versus.items():
        print(
            f"pipeline at {size}: {ratios['vs_raw_decode_resize']:.3f} of raw decode + the same resize; "
            f"shards {ratios['shards_vs_in_memory']:.3f} of the in-memory pipeline"
        )
    payload = {
        "command": "python bench/input.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "images": len(paths),
        "image_shape": [args.height, args.width, 3],
        "mean_file_bytes": mean_bytes,
        "resize_to": args.image_sizes,
        "parallel": "AUTOTUNE" if args.parallel == tf.data.AUTOTUNE else args.parallel,
        "batch": BATCH,
        "repeats": args.repeats,
        "shard_records": args.shard_records,
        "service_workers": args.service_workers,
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "images_per_second": rates,
        "pipeline_ratios": versus,
    }
    print(f"results: {write_results('input', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
