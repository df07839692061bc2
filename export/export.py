"""Export a trained run's two towers as SavedModels for TF Serving.

    python -m export.export --run runs/demo --out runs/demo/models [--version 1]

Writes OUT/image_encoder/VERSION/ and OUT/text_encoder/VERSION/ (VERSION a positive
integer, as TF Serving loads only those); refuses to overwrite. A run trained on
precomputed features gets the backbone its features.json records in front of its
projection, so its image tower takes image bytes too.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_export, argv)


def _export(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.serving.export import export_run
    from vse_tf.training.run import restore_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training run directory (holds config.json)")
    parser.add_argument("--out", required=True, help="models directory")
    parser.add_argument("--version", type=int, default=1, help="version sub-directory, a positive integer (default: 1)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    paths = export_run(restore_run(args.run), args.out, args.version)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
