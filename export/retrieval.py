"""Export the retrieval SavedModel: encoder + gallery index + top-k in one graph.

    python -m export.retrieval --image_index INDEX [--captions_index CINDEX] --out MODELS [--version 1] [--k 10]

Writes MODELS/retrieval/VERSION/ with ``search`` (sentences -> image ids, scores) and/or
``annotate`` (image bytes -> captions, scores). The encoders default to the siblings of
the models that built the indexes (``--text_model`` / ``--image_model`` override). An
index folder of the ``ivf`` backend is searched through its lists (``search_tuned`` /
``annotate_tuned`` also take ``nprobe`` and ``k``); an exact one by brute force.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_retrieval, argv)


def _retrieval(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.serving.index_store import load_index
    from vse_tf.serving.retrieval_model import export_retrieval_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_index", help="index built from images (enables `search`)")
    parser.add_argument("--captions_index", help="index built from captions (enables `annotate`)")
    parser.add_argument("--text_model", help="text encoder version dir (default: beside the image index's model)")
    parser.add_argument("--image_model", help="image encoder version dir (default: beside the caption index's model)")
    parser.add_argument("--out", required=True, help="models directory")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    path = export_retrieval_model(
        args.out,
        args.version,
        args.k,
        image_index=load_index(args.image_index) if args.image_index else None,
        text_model=args.text_model,
        caption_index=load_index(args.captions_index) if args.captions_index else None,
        image_model=args.image_model,
    )
    print(f"retrieval: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
