"""Write TensorBoard projector files for a run's split (images and captions).

python -m export.projector --run runs/demo [--split test] [--max_images 500]
tensorboard --logdir runs/demo/logs/projector
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_projector, argv)


def _projector(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.evaluation.encode import encode_split
    from vse_tf.evaluation.projector import write_projector
    from vse_tf.training.run import restore_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_images", type=int, default=500)
    parser.add_argument("--out", help="log dir (default: RUN/logs/projector)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    run = restore_run(args.run)
    out = args.out or run.run_dir / "logs" / "projector"
    print(f"projector: {write_projector(encode_split(run, args.split), out, args.max_images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
