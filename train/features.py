"""Precompute image features with a backbone, in the VSE++ precomp layout.

    python -m train.features --images data/shapes --backbone efficientnet_lite0 \
        --weights weights/efficientnet_lite0.weights.h5 --out data/shapes/features_lite0

``--images``: a Karpathy ``dataset_*.json`` (or its folder; images under ``images/`` or
``--image_root``), an Open Clip Art tree (``/usr/share/openclipart``), or a folder in any
``--format`` the project reads (``coco``, ``folders``, ``wikipedia``, ``jsonl``, ``csv``;
``--annotations`` as ``data.annotations``). The splits are read exactly as training with
``--image.backbone features`` reads them, so the rows line up. Writes
OUT/{split}_ims.npy, OUT/{split}_caps.txt and OUT/features.json (the record of the
backbone, its weights file and SHA-256, image size, background and image ids; without
``--weights`` the random initial weights are saved as OUT/backbone.weights.h5). Then train
at feature speed: ``--image.backbone features --image.feature_dim 1280 --data.features_dir
OUT``; the export puts this backbone back in front of the trained projection.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command
from vse_tf.config import DATA_FORMATS


def main(argv: list[str] | None = None) -> int:
    return run_command(_features, argv)


def _features(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.image.features import (
        DEFAULT_IMAGE_SIZE,
        dataset_splits,
        source_data_config,
        standardize_features,
        write_split_features,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="dataset JSON, its folder, or an Open Clip Art root")
    parser.add_argument("--image_root", default="", help="folder the dataset's image paths are relative to")
    parser.add_argument(
        "--format", default="auto", choices=("auto", *(f for f in DATA_FORMATS if f != "precomp")), help="data.format"
    )
    parser.add_argument("--annotations", default="", help="data.annotations (for --format)")
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(DEFAULT_IMAGE_SIZE))
    parser.add_argument("--weights", default="", help="backbone .weights.h5 (empty: random init)")
    parser.add_argument("--image_size", type=int, default=0, help="input side (default: the backbone's)")
    parser.add_argument(
        "--background", default="255,255,255", help="R,G,B transparent pixels are composited onto (image.background)"
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="z-score each dimension by the train split's mean and std (recorded; the export applies it too)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    background = tuple(int(value) for value in args.background.split(","))
    data = source_data_config(args.images, args.out, args.format, args.image_root, args.annotations)
    manifest = write_split_features(
        dataset_splits(data),
        args.out,
        args.backbone,
        args.weights,
        args.image_size or None,
        args.batch_size,
        progress=True,
        background=background,
    )
    if args.standardize:
        standardize_features(args.out)
        print(f"standardised: {args.out}/*_ims.npy z-scored by the train split's mean and std (features.json)")
    for split, counts in manifest["splits"].items():
        print(
            f"{split}: {counts['images']} images x {manifest['feature_dim']} -> {args.out}/{split}_ims.npy, "
            f"{counts['captions']} captions, {len(counts['failed'])} undecodable"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
