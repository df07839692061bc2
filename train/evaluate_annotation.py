"""Annotate a class-folder image set (Corel1k layout) through a trained run's towers.

    python -m train.evaluate_annotation --images DIR --run runs/demo [--descriptions FILE] [--k 5]
    python -m train.evaluate_annotation --run runs/demo --from_split test --images data/shapes_classes  # makes DIR

Prints top-1/top-5 annotation accuracy, MAP both ways and the per-class top-1, and writes
RUN/corel.json. ``--from_split`` first links the run's split images into DIR/<category>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from train.flags import add_verbose_flag, run_command
from vse_tf.data.readers.folders import read_class_folders
from vse_tf.data.splits import load_split
from vse_tf.evaluation.annotation import annotation_report, export_class_folders
from vse_tf.files import write_text_atomic


def main(argv: list[str] | None = None) -> int:
    return run_command(_annotate, argv)


def _annotate(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    import tensorflow as tf

    from vse_tf.data.pipeline import decode_and_resize
    from vse_tf.training.run import restore_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="root of class folders")
    parser.add_argument("--run", required=True)
    parser.add_argument("--descriptions", help="class<TAB>text lines (default: the folder names)")
    parser.add_argument("--from_split", help="first link this split's images into --images by category")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    run = restore_run(args.run)
    if args.from_split:
        split = load_split(run.config, args.from_split)
        export_class_folders(split.image_refs, split.categories, args.images)
    data = read_class_folders(args.images, args.descriptions)
    size = run.config.image.image_size
    images = tf.data.Dataset.from_tensor_slices(list(data.image_paths)).map(
        lambda path: tf.cast(decode_and_resize(tf.io.read_file(path), size), tf.float32)
    )
    image_embeddings = run.model.image_encoder.predict(images.batch(256), verbose=0)
    names = sorted(data.class_texts)
    texts = [data.class_texts[name] for name in names]
    class_embeddings = run.model.text_encoder.predict(run.tokenizer(tf.constant(texts)), verbose=0)
    report = annotation_report(image_embeddings, data.labels, names, class_embeddings)
    print(f"{report.images} images, {report.classes} classes ({args.images})")
    print(f"top-1 {report.top1:.1f}%  top-5 {report.top5:.1f}%  chance top-1 {100 / report.classes:.1f}%")
    print(f"MAP image->class {report.image_to_class_map:.4f}  class->image {report.class_to_image_map:.4f}")
    for name in names:
        print(f"  {name:<20} {data.class_texts[name]!r:<30} top-1 {report.per_class_top1.get(name, 0.0):5.1f}%")
    path = Path(run.run_dir) / "corel.json"
    write_text_atomic(path, json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
