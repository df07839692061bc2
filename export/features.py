"""Precompute image features with a backbone, in the VSE++ precomp layout.

    python -m export.features --images data/shapes --backbone efficientnet_lite0 \
        --weights weights/efficientnet_lite0.weights.h5 --out data/shapes/features_lite0

``--images``: a Karpathy ``dataset_*.json`` (or its folder; images under ``images/`` or
``--image_root``), or an Open Clip Art tree (``/usr/share/openclipart``). Writes
OUT/{split}_ims.npy, OUT/{split}_caps.txt and OUT/features.json. Then train at feature
speed: ``--image.backbone features --image.feature_dim 1280 --data.features_dir OUT``.
"""

from __future__ import annotations

import argparse
import sys

from vse_tf.features import DEFAULT_IMAGE_SIZE, records_from_source, write_precomp_features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="dataset JSON, its folder, or an Open Clip Art root")
    parser.add_argument("--image_root", default="", help="folder the JSON's image paths are relative to")
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(DEFAULT_IMAGE_SIZE))
    parser.add_argument("--weights", default="", help="backbone .weights.h5 (empty: random init)")
    parser.add_argument("--image_size", type=int, default=0, help="input side (default: the backbone's)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        records = records_from_source(args.images, args.image_root)
        manifest = write_precomp_features(
            records, args.out, args.backbone, args.weights, args.image_size or None, args.batch_size, progress=True
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for split, counts in manifest["splits"].items():
        print(
            f"{split}: {counts['images']} images x {manifest['feature_dim']} -> {args.out}/{split}_ims.npy, "
            f"{counts['captions']} captions, {len(counts['failed'])} undecodable"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
