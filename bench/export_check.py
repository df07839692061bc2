"""Check a trained run's export end to end: bytes in through the SavedModels = the training route.

    python bench/export_check.py --run runs/bench_openclipart/runs/minilm_frozen_infonce [--split test]

Exports the run's towers to ``RUN/models_check/<version>`` (a fresh version each time),
reloads them with ``tf.saved_model.load`` and embeds every image of the split from its
file's bytes and every caption from its text. Compares with the route ``train.evaluate``
takes (for a run trained on precomputed features: the features folder through the
projection): the largest absolute difference per embedding, and Recall@K recomputed from
the exported towers' embeddings against ``evaluate_encoded``'s. Prints both and writes
``bench/results/export_check.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from results_file import write_results

from vse_tf.evaluation.encode import encode_split, evaluate_encoded
from vse_tf.evaluation.metrics import evaluate_retrieval
from vse_tf.serving.export import export_run
from vse_tf.training.run import restore_run

RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def next_version(models: Path) -> int:
    versions = [int(path.name) for path in (models / "image_encoder").glob("*") if path.name.isdigit()]
    return max(versions, default=0) + 1


def embed_image_files(signature, paths: list[str], batch: int = 32) -> np.ndarray:
    """``float32 [N, D]``: each file's bytes through the image SavedModel's ``serving_default``."""
    rows = []
    for start in range(0, len(paths), batch):
        encoded = [Path(path).read_bytes() for path in paths[start : start + batch]]
        rows.append(signature(images=tf.constant(encoded))["embeddings"].numpy())
    return np.concatenate(rows)


def embed_sentences(signature, sentences: list[str], batch: int = 256) -> np.ndarray:
    rows = []
    for start in range(0, len(sentences), batch):
        rows.append(signature(sentences=tf.constant(sentences[start : start + batch]))["embeddings"].numpy())
    return np.concatenate(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    run = restore_run(args.run)
    encoded = encode_split(run, args.split)
    trained = evaluate_encoded(encoded)
    models = args.run / "models_check"
    paths = export_run(run, models, next_version(models))
    image = tf.saved_model.load(str(paths["image_encoder"])).signatures["serving_default"]
    text = tf.saved_model.load(str(paths["text_encoder"])).signatures["serving_default"]
    image_rows = embed_image_files(image, list(encoded.split.image_refs))
    caption_rows = embed_sentences(text, list(encoded.split.captions))
    image_gap = np.abs(image_rows - encoded.image_embeddings).max(axis=1)
    caption_gap = np.abs(caption_rows - encoded.caption_embeddings).max(axis=1)
    exported = evaluate_retrieval(image_rows, caption_rows, encoded.split.caption_to_image)
    print(f"{args.run} ({run.config.image.backbone} image tower), {args.split} split, exported to {models}")
    print(
        f"images: {len(image_rows)}, largest |bytes route - training route| {image_gap.max():.2e} "
        f"(median {np.median(image_gap):.2e}); over 1e-4: {int((image_gap > 1e-4).sum())}"
    )
    print(f"captions: {len(caption_rows)}, largest difference {caption_gap.max():.2e}")
    print(f"{'':<22}" + " ".join(f"{key:>8}" for key in RECALL_KEYS))
    for name, metrics in (("train.evaluate", trained), ("exported towers", exported)):
        print(f"{name:<22}" + " ".join(f"{metrics[key]:8.2f}" for key in RECALL_KEYS))
    path = write_results(
        "export_check",
        {
            "command": "python bench/export_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "run": str(args.run),
            "images": len(image_rows),
            "captions": len(caption_rows),
            "image_max_abs_difference": float(image_gap.max()),
            "images_over_1e-4": int((image_gap > 1e-4).sum()),
            "caption_max_abs_difference": float(caption_gap.max()),
            "train_evaluate": {key: trained[key] for key in RECALL_KEYS},
            "exported": {key: exported[key] for key in RECALL_KEYS},
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
