"""Train a visual-semantic embedding with model.fit.

    python -m train.fit --data.data_dir data/shapes --train.run_dir runs/mine --train.epochs 20

Every ``--section.field`` flag maps onto ExperimentConfig (see ``--help``); ``--config``
starts from a JSON file. Writes the run directory, then evaluates the best checkpoint on
the test split (``metrics.json``) and prints the Recall@K table.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_config_flags, config_from_flags, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_fit, argv)


def _fit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser)
    parser.add_argument("--eval_split", default="test", help="split evaluated after training (default: test)")
    parser.add_argument(
        "--verbose",
        type=int,
        nargs="?",
        const=2,
        default=1,
        help="0: quiet; 1: one line per epoch; 2 (or --verbose alone): and Keras' epoch log, TensorFlow's "
        "start-up log, the traceback of an error",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the run directory's backup, best checkpoint and history and train from the start",
    )
    args = parser.parse_args(argv)
    config = config_from_flags(args)
    # Imported after the config is checked, and after run_command has quietened TensorFlow.
    from vse_tf.evaluation.encode import evaluate_run
    from vse_tf.evaluation.reports import format_recall_table
    from vse_tf.training.run import save_metrics
    from vse_tf.training.trainer import train

    run = train(config, verbose=args.verbose, fresh=args.fresh)
    metrics = evaluate_run(run, args.eval_split)
    path = save_metrics(run, metrics)
    print(format_recall_table(metrics, title=f"{args.eval_split} split, best checkpoint by validation rsum"))
    print(f"metrics: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
