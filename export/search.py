"""Command-line image search and image annotation over an index.

vse-search "a small red circle left of a blue star" --index INDEX [--k 5] [--model TEXT_MODEL]
vse-annotate IMAGE [IMAGE ...] --captions_index INDEX [--k 5] [--model IMAGE_MODEL]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tensorflow as tf

from vse_tf.serving.index import EmbeddingIndex, error_reason, image_model_for, text_model_for, top_k


def _print_results(query: str, ids, indices, scores) -> None:
    print(query)
    for rank, (row, score) in enumerate(zip(indices, scores), start=1):
        print(f"  {rank:2d}. {score:.4f}  {ids[row]}")


def _index_and_encoder(parser, index_path: str, kind: str, model: str | None, default_model):
    """Loads the index (refusing the wrong kind) and the serving signature of the query tower."""
    index = EmbeddingIndex.load(index_path)
    if index.kind != kind:
        parser.error(f"{index_path} indexes {index.kind}; {parser.prog} needs an index of {kind}")
    encoder = tf.saved_model.load(str(model or default_model(index))).signatures["serving_default"]
    return index, encoder


def search_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Image search: sentences -> the nearest gallery images.")
    parser.add_argument("sentences", nargs="+")
    parser.add_argument("--index", required=True, help="index built from images (python -m export.index --images)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--model", help="text encoder version dir (default: beside the index's image encoder)")
    args = parser.parse_args(argv)
    index, serve = _index_and_encoder(parser, args.index, "images", args.model, text_model_for)
    queries = serve(sentences=tf.constant(args.sentences))["embeddings"].numpy()
    indices, scores = top_k(queries, index.embeddings, args.k)
    for sentence, rows, values in zip(args.sentences, indices, scores):
        _print_results(sentence, index.ids, rows, values)
    return 0


def annotate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Image annotation: images -> the nearest captions.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--captions_index", required=True)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--model", help="image encoder version dir (default: beside the index's text encoder)")
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
        indices, scores = top_k(query, index.embeddings, args.k)
        _print_results(image, index.ids, indices[0], scores[0])
    return status


if __name__ == "__main__":
    sys.exit(search_main())
