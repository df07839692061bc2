"""Evaluate a trained run: Recall@K both ways (and category MAP when images have one).

    python -m train.evaluate --run runs/demo --split test [--protocol coco1k|coco5k|full] [--map_at 50]
        [--normalise qb [--qb_beta 20]]

``full`` and ``coco5k`` rank against the whole split; ``coco1k`` cuts the split's images
into five consecutive folds and averages the metrics (the COCO 1K protocol on the 5K test
split). Writes ``RUN/metrics.json`` for the test split's full protocol, else
``RUN/metrics_<split>_<protocol>.json``, and the R@K curves (K = 1..50, whole split) as
``RUN/recall_<split>.png``. ``--normalise qb`` also reports the querybank-normalised
Recall@K (inverted softmax, banks: the training split's images and captions) as ``qb_*``.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command
from vse_tf.evaluation.querybank import DEFAULT_BETA, NORMALISATIONS
from vse_tf.evaluation.reports import format_map_table, format_recall_table, plot_recall_curves, recall_curves


def metrics_file_name(split: str, protocol: str) -> str:
    return "metrics.json" if (split, protocol) == ("test", "full") else f"metrics_{split}_{protocol}.json"


def querybank_metrics(run, encoded, protocol: str, beta: float) -> dict[str, float]:
    """Recall@K with querybank normalisation, the training split's images and captions as banks, keys ``qb_*``."""
    from vse_tf.evaluation.encode import PROTOCOL_FOLDS, encode_split
    from vse_tf.evaluation.metrics import evaluate_retrieval

    bank = encode_split(run, "train")
    metrics = evaluate_retrieval(
        encoded.image_embeddings,
        encoded.caption_embeddings,
        encoded.split.caption_to_image,
        folds=PROTOCOL_FOLDS[protocol],
        normalise="qb",
        image_bank=bank.image_embeddings,
        caption_bank=bank.caption_embeddings,
        beta=beta,
    )
    return {f"qb_{key}": value for key, value in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    return run_command(_evaluate, argv)


def _evaluate(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.evaluation.encode import PROTOCOL_FOLDS, encode_split, evaluate_encoded
    from vse_tf.evaluation.metrics import retrieval_ranks
    from vse_tf.training.run import restore_run, save_metrics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training run directory (holds config.json)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--protocol", default="full", choices=sorted(PROTOCOL_FOLDS))
    parser.add_argument("--map_at", type=int, default=None, help="also report MAP@R for this R")
    parser.add_argument("--no_plot", action="store_true", help="skip the R@K curve PNG")
    parser.add_argument(
        "--normalise", default="none", choices=NORMALISATIONS, help="qb: also querybank-normalised Recall@K"
    )
    parser.add_argument("--qb_beta", type=float, default=DEFAULT_BETA, help="inverse temperature of qb")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    run = restore_run(args.run)
    encoded = encode_split(run, args.split)
    metrics = evaluate_encoded(encoded, args.protocol, args.map_at, progress=True)
    if args.normalise == "qb":
        metrics.update(querybank_metrics(run, encoded, args.protocol, args.qb_beta))
    print(format_recall_table(metrics, title=f"{args.run}: {args.split} split, protocol {args.protocol}"))
    if args.normalise == "qb":
        normalised = {key[3:]: value for key, value in metrics.items() if key.startswith("qb_")}
        print(format_recall_table(normalised, title=f"querybank-normalised (beta {args.qb_beta}, bank: train split)"))
    if "i2t_map" in metrics:
        print(format_map_table(metrics, args.map_at))
    print(f"metrics: {save_metrics(run, metrics, metrics_file_name(args.split, args.protocol))}")
    if not args.no_plot:
        ranks = retrieval_ranks(encoded.image_embeddings, encoded.caption_embeddings, encoded.split.caption_to_image)
        plot = run.run_dir / f"recall_{args.split}.png"
        plot_recall_curves(recall_curves(*ranks), plot, title=f"{run.run_dir.name}: {args.split} split")
        print(f"recall curves: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
