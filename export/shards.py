"""Write any dataset vse_tf reads into sharded TFRecord files plus ``manifest.json``.

    python -m export.shards --data.format karpathy --data.data_dir data/shapes --out data/shapes_shards \\
        --shard_records 1000
    python -m train.fit --data.format tfrecord --data.data_dir data/shapes_shards --train.run_dir runs/shards

Every ``--section.field`` flag of ``train.fit`` is accepted (``--data.*`` picks the source,
``--image.backbone features --image.feature_dim F`` writes feature rows instead of image
files). Records are screened once here; the skip report goes into the manifest and is
printed.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_config_flags, config_from_flags, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_shards, argv)


def _shards(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.data.readers.tfrecord import read_manifest
    from vse_tf.data.shards import write_shards

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser)
    parser.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    parser.add_argument("--shard_records", type=int, default=1000, help="images per shard (default: 1000)")
    args = parser.parse_args(argv)
    config = config_from_flags(args)
    report = write_shards(config, args.out, args.shard_records)
    manifest = read_manifest(args.out)
    print(manifest.skip_log(list(manifest.splits)).summary("input"))
    print(report.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
