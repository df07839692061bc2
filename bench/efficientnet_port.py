"""Benchmark: the EfficientNet-Lite0 port against PyTorch, on real photos, and its speed.

    python bench/efficientnet_port.py [--weights FILE.weights.h5] [--batch 32] [--repeats 5]

Converts the packaged ImageNet weights (unless --weights is given), then prints the largest
|Keras - torch| logit difference on skimage's two bundled photos (the PyTorch reference of
tests/test_efficientnet.py, written from the state_dict), their top-3 ImageNet classes, and
the Keras model's CPU throughput (images/s, the best of --repeats batches after a warm-up).
Needs the [test] extra (torch, scikit-image). Writes bench/results/efficientnet_port.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import tensorflow as tf
from results_file import write_results

from vse_tf.image.backbones.convert import convert_backbone, packaged_lite0_state_dict, read_torch_state_dict
from vse_tf.image.backbones.efficientnet_lite import build_efficientnet_lite0

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "image"))
from test_efficientnet import torch_lite0_logits  # noqa: E402  (the tested reference)

# The ImageNet indices printed (no class-name file ships offline).
CLASS_NAMES = {
    281: "tabby",
    282: "tiger cat",
    285: "Egyptian cat",
    504: "coffee mug",
    925: "consomme",
    967: "espresso",
    968: "cup",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    weights = args.weights
    if weights is None:
        weights = Path(tempfile.mkdtemp()) / "efficientnet_lite0.weights.h5"
        convert_backbone("efficientnet_lite0", weights)
    model = build_efficientnet_lite0()
    model.load_weights(weights)
    photos = [skimage.data.chelsea(), skimage.data.coffee()]
    pixels = np.round(np.stack([tf.image.resize(photo, [224, 224], antialias=True).numpy() for photo in photos]))
    logits = model(pixels.astype(np.float32), training=False).numpy()
    reference = torch_lite0_logits(read_torch_state_dict(packaged_lite0_state_dict()), pixels)
    difference = float(np.abs(logits - reference).max())
    print(f"max |keras - torch| logit difference: {difference:.2e} (largest logit {np.abs(logits).max():.1f})")
    top = {}
    for name, row in zip(("chelsea (cat)", "coffee"), tf.nn.softmax(logits).numpy()):
        best = [int(index) for index in np.argsort(-row)[:3]]
        top[name] = [{"class": index, "name": CLASS_NAMES.get(index, ""), "p": float(row[index])} for index in best]
        print(f"{name:<14} " + ", ".join(f"{i} {CLASS_NAMES.get(i, '?')} {row[i]:.3f}" for i in best))
    run = tf.function(lambda x: model(x, training=False))
    batch = tf.random.uniform([args.batch, 224, 224, 3], 0, 255)
    run(batch).numpy()
    best_seconds = min(_timed(run, batch) for _ in range(args.repeats))
    speed = args.batch / best_seconds
    print(f"Keras EfficientNet-Lite0, batch {args.batch}, CPU: {speed:.0f} images/s")
    path = write_results(
        "efficientnet_port",
        {"tensorflow": tf.__version__, "max_abs_logit_difference": difference, "top3": top, "images_per_s": speed},
    )
    print(f"results: {path}")
    return 0


def _timed(run, batch) -> float:
    started = time.perf_counter()
    run(batch).numpy()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
