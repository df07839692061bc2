"""Embed a gallery once with an exported tower and write an index folder; add or remove items.

    python -m export.index --images DIR --model MODELS/image_encoder/1 --out INDEX [--backend ivf]
    python -m export.index --captions FILE --model MODELS/text_encoder/1 --out INDEX
    python -m export.index --update INDEX [--images DIR | --captions FILE] [--remove IDS_FILE]

Each build or update writes the next version directory INDEX/N/ (an existing version is
never overwritten). ``--backend``: ``exact`` (brute force), ``ivf`` (core-TF IVF; the
version directory is a SavedModel that stock TF Serving serves), ``faiss-ivf``,
``faiss-ivfpq``, ``faiss-hnsw`` (faiss, offline; needs the ``faiss`` extra). ``--captions``
reads one caption per line (blank lines ignored); ``--remove`` one id per line. Images
the model rejects are skipped and listed in index.json. An update embeds the new items
with the model that built the index (or ``--model``), keeps the backend, and does not
retrain it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from train.flags import add_verbose_flag, run_command

if TYPE_CHECKING:
    from vse_tf.serving.index import EmbeddingIndex

PARAM_FLAGS = {
    "nlist": int,
    "nprobe": int,
    "quantize": str,
    "pq_m": int,
    "pq_nbits": int,
    "refine": str,
    "hnsw_m": int,
    "ef_search": int,
}


def _read_lines(path: str) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _embed(args, model: str) -> EmbeddingIndex:
    from vse_tf.serving.index import build_caption_index, build_image_index

    if args.images:
        return build_image_index(model, args.images, args.batch_size)
    return build_caption_index(model, _read_lines(args.captions))


def _params(args) -> dict:
    return {name: getattr(args, name) for name in PARAM_FLAGS if getattr(args, name) is not None}


def _report(path: Path, index: EmbeddingIndex | None) -> None:
    from vse_tf.serving.index_store import load_index

    current = load_index(path)
    print(f"{path}: {len(current.gallery.ids)} {current.gallery.kind}, backend {current.backend}")
    if index is not None:
        print(f"  {len(index.skipped)} skipped")
        for name, reason in index.skipped[:10]:
            print(f"  skipped {name}: {reason}")


def main(argv: list[str] | None = None) -> int:
    return run_command(_index, argv)


def _index(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.serving.index_store import BACKENDS, load_index, update_index, write_index

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", help="folder of images (searched recursively)")
    source.add_argument("--captions", help="text file, one caption per line")
    parser.add_argument("--model", help="SavedModel version dir of the matching tower (an update: the index's)")
    parser.add_argument("--out", help="index folder to write the next version of")
    parser.add_argument("--update", help="existing index folder: write its next version with items added/removed")
    parser.add_argument("--remove", help="with --update: text file of ids to remove, one a line")
    parser.add_argument("--backend", choices=BACKENDS, default="exact")
    parser.add_argument("--batch_size", type=int, default=32)
    for name, kind in PARAM_FLAGS.items():
        parser.add_argument(f"--{name}", type=kind, help="backend setting (see docs/search.md)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if bool(args.out) == bool(args.update):
        parser.error("give --out (build) or --update (add/remove), not both")
    if args.out and not (args.images or args.captions) or args.out and not args.model:
        parser.error("a build needs --images or --captions, and --model")
    if args.out:
        index = _embed(args, args.model)
        path = write_index(args.out, index, args.backend, _params(args))
    else:
        current = load_index(args.update)
        index = _embed(args, args.model or current.gallery.model) if (args.images or args.captions) else None
        path = update_index(args.update, index, _read_lines(args.remove) if args.remove else ())
    _report(path, index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
