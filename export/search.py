"""Command-line image search and image annotation over an index.

vse-search "a small red circle left of a blue star" --index INDEX [--k 5] [--nprobe N] [--model TEXT_MODEL]
    [--querybank CAPTIONS_INDEX [--qb_beta 20]]
vse-annotate IMAGE [IMAGE ...] --captions_index INDEX [--k 5] [--nprobe N] [--model IMAGE_MODEL]
    [--querybank IMAGES_INDEX [--qb_beta 20]]

INDEX is an index folder (its newest version is searched) or one version directory, of
any backend (exact, ivf, faiss-*); the output is the same. ``--querybank`` ranks by the
inverted softmax (querybank normalisation) with a bank of queries like the real ones: an
index of the training captions for image search, of the training images for annotation
(built with the same export; see docs/search.md). The printed scores are then
``s(q, g) - offset(g)``.
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


def _loaded_index(parser, path: str) -> SearchIndex:
    """The index folder's newest version (any backend); a folder that cannot load is a usage error."""
    from vse_tf.serving.index import IndexFolderError
    from vse_tf.serving.index_store import load_index

    try:
        return load_index(path)
    except (FileNotFoundError, IndexFolderError, ImportError) as error:
        parser.error(str(error))


def _index_and_encoder(parser, index_path: str, kind: str, model: str | None, default_model):
    """Loads the index (any backend; refusing the wrong kind) and the serving signature of the query tower."""
    import tensorflow as tf

    index = _loaded_index(parser, index_path)
    if index.gallery.kind != kind:
        parser.error(f"{index_path} indexes {index.gallery.kind}; {parser.prog} needs an index of {kind}")
    encoder = tf.saved_model.load(str(model or default_model(index.gallery))).signatures["serving_default"]
    return index, encoder


def _search(index: SearchIndex, queries, args, bank) -> tuple:
    """The index's own ranking, or the querybank-normalised one when ``--querybank`` is given."""
    if bank is None:
        return index.search(queries, args.k, args.nprobe)
    from vse_tf.serving.querybank_search import querybank_search

    return querybank_search(index, queries, args.k, bank, args.qb_beta, args.nprobe)


def _add_querybank_flags(parser: argparse.ArgumentParser, bank_kind: str) -> None:
    parser.add_argument(
        "--querybank",
        help=f"index of {bank_kind} like the queries (e.g. the training {bank_kind}): rank by the inverted softmax",
    )
    parser.add_argument("--qb_beta", type=float, default=20.0, help="querybank inverse temperature (default: 20)")


def _querybank(parser, path: str | None, kind: str, index: SearchIndex):
    """The bank's ``float32 [B, D]`` embeddings (None without ``--querybank``); it must index ``kind``."""
    if not path:
        return None
    bank = _loaded_index(parser, path)
    if bank.gallery.kind != kind:
        parser.error(f"--querybank {path} indexes {bank.gallery.kind}; the queries here are {kind}")
    if bank.dim != index.dim:
        parser.error(f"--querybank {path} has dim {bank.dim}, the index has dim {index.dim}")
    return bank.gallery.embeddings


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
    _add_querybank_flags(parser, "captions")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    index, serve = _index_and_encoder(parser, args.index, "images", args.model, text_model_for)
    bank = _querybank(parser, args.querybank, "captions", index)
    queries = serve(sentences=tf.constant(args.sentences))["embeddings"].numpy()
    found, scores = _search(index, queries, args, bank)
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
    _add_querybank_flags(parser, "images")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    index, serve = _index_and_encoder(parser, args.captions_index, "captions", args.model, image_model_for)
    bank = _querybank(parser, args.querybank, "images", index)
    status = 0
    for image in args.images:
        try:
            query = serve(images=tf.constant([Path(image).read_bytes()]))["embeddings"].numpy()
        except (OSError, tf.errors.InvalidArgumentError) as error:
            reason = error_reason(error) if isinstance(error, tf.errors.OpError) else str(error)
            print(f"error: {image}: {reason}", file=sys.stderr)
            status = 1
            continue
        found, scores = _search(index, query, args, bank)
        _print_results(image, found[0], scores[0])
    return status


if __name__ == "__main__":
    sys.exit(search_main())
