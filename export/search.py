"""Command-line image search and image annotation over an index.

vse-search "a small red circle left of a blue star" --index INDEX [--k 5] [--nprobe N] [--model TEXT_MODEL]
vse-annotate IMAGE [IMAGE ...] --captions_index INDEX [--k 5] [--nprobe N] [--model IMAGE_MODEL]

INDEX is an index folder (its newest version is searched) or one version directory, of
any backend (exact, ivf, faiss-*); the output is the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from train.flags import add_verbose_flag, run_command

if TYPE_CHECKING:
    from vse_tf.serving.index_store import SearchIndex


def _print_results(query: str, ids, scores) -> None:
    print(query)
    for rank, (item, score) in enumerate(zip(ids, scores), start=1):
        if item:  # an approximate index may reach fewer than k items
            print(f"  {rank:2d}. {score:.4f}  {item}")


def _index_and_encoder(parser, index_path: str, kind: str, model: str | None, default_model):
    """Loads the index (any backend; refusing the wrong kind) and the serving signature of the query tower."""
    import tensorflow as tf

    from vse_tf.serving.index import IndexFolderError
    from vse_tf.serving.index_store import load_index

    try:
        index = load_index(index_path)
    except (FileNotFoundError, IndexFolderError, ImportError) as error:
        parser.error(str(error))
    if index.gallery.kind != kind:
        parser.error(f"{index_path} indexes {index.gallery.kind}; {parser.prog} needs an index of {kind}")
    encoder = tf.saved_model.load(str(model or default_model(index.gallery))).signatures["serving_default"]
    return index, encoder


def _search(index: SearchIndex, queries, k: int, nprobe: int | None):
    return index.search(queries, k, nprobe)


def search_main(argv: list[str] | None = None) -> int:
    return run_command(_search_command, argv)


def annotate_main(argv: list[str] | None = None) -> int:
    return run_command(_annotate_command, argv)


def _search_command(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    import tensorflow as tf

    from vse_tf.serving.index import text_model_for

    parser = argparse.ArgumentParser(description="Image search: sentences -> the nearest gallery images.")
    parser.add_argument("sentences", nargs="+")
    parser.add_argument("--index", required=True, help="index built from images (python -m export.index --images)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--model", help="text encoder version dir (default: beside the index's image encoder)")
    parser.add_argument("--nprobe", type=int, help="lists probed (ivf, faiss-ivf*) or HNSW beam; default: the index's")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    index, serve = _index_and_encoder(parser, args.index, "images", args.model, text_model_for)
    queries = serve(sentences=tf.constant(args.sentences))["embeddings"].numpy()
    found, scores = _search(index, queries, args.k, args.nprobe)
    for sentence, ids, values in zip(args.sentences, found, scores):
        _print_results(sentence, ids, values)
    return 0


def _annotate_command(argv: list[str]) -> int:
    import tensorflow as tf

    from vse_tf.serving.index import error_reason, image_model_for

    parser = argparse.ArgumentParser(description="Image annotation: images -> the nearest captions.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--captions_index", required=True)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--model", help="image encoder version dir (default: beside the index's text encoder)")
    parser.add_argument("--nprobe", type=int, help="lists probed (ivf, faiss-ivf*) or HNSW beam; default: the index's")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    index, serve = _index_and_encoder(parser, args.captions_index, "captions", args.model, image_model_for)
    status = 0
    for image in args.images:
        try:
            query = serve(images=tf.constant([Path(image).read_bytes()]))["embeddings"].numpy()
        except (OSError, tf.errors.InvalidArgumentError) as error:
            reason = error_reason(error) if isinstance(error, tf.errors.OpError) else str(error)
            print(f"error: {image}: {reason}", file=sys.stderr)
            status = 1
            continue
        found, scores = _search(index, query, args.k, args.nprobe)
        _print_results(image, found[0], scores[0])
    return status


if __name__ == "__main__":
    sys.exit(search_main())
