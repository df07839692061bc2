"""Train the siamese text network and write the per-text vectors behind fine-grained labels.

    python -m train.siamese --data.data_dir data/shapes --siamese.epochs 2 \
        --loss.text_vectors runs/siamese/text_vectors.npz

Reads the training split's texts and their images' categories, trains two weight-sharing
copies of the ``text`` section's encoder so that same-category texts are similar, and
writes one unit vector per distinct training text to ``loss.text_vectors``. Then train
with the same flags plus ``--loss.kind finegrained`` (``python -m train.fit``).
"""

from __future__ import annotations

import argparse
import json
import sys

from train.flags import add_config_flags, config_from_flags, run_command
from vse_tf.data.splits import load_split


def main(argv: list[str] | None = None) -> int:
    return run_command(_siamese, argv)


def _siamese(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.model.siamese import encode_texts, label_separation, texts_with_categories, train_siamese

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser)
    parser.add_argument(
        "--verbose",
        type=int,
        nargs="?",
        const=2,
        default=2,
        help="Keras fit verbosity: 0, 1 or 2; given as 2 (or alone) also TensorFlow's start-up log and tracebacks",
    )
    args = parser.parse_args(argv)
    config = config_from_flags(args)
    if not config.loss.text_vectors:
        parser.error("--loss.text_vectors FILE.npz is where the vectors go")
    result = train_siamese(config, load_split(config, "train"), verbose=args.verbose)
    path = result.text_vectors.save(config.loss.text_vectors)
    val_texts, val_categories = texts_with_categories(load_split(config, "val"))
    separation = label_separation(encode_texts(result.network.encoder, result.tokenizer, val_texts), val_categories)
    print(json.dumps({"text_vectors": str(path), "texts": len(result.text_vectors.texts), "val": separation}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
