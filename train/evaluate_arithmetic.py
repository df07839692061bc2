"""Vector arithmetic on a trained run: image - text + text.

    python -m train.evaluate_arithmetic --run runs/demo --evaluate            # swap success vs chance (shapes data)
    python -m train.evaluate_arithmetic --run runs/demo --image IMG --minus red --plus blue [--k 5]

The gallery is the split's images (``--split``, default test).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.flags import add_verbose_flag, run_command


def split_descriptions(json_path: Path, split: str) -> list[str]:
    """The shapes generator's scene descriptions, in the reader's image order."""
    images = [image for image in json.loads(json_path.read_text())["images"] if image["split"] == split]
    missing = [image.get("filename") for image in images if "description" not in image]
    if missing:
        raise ValueError(f"{json_path}: images lack 'description' (e.g. {missing[0]}); swaps need the shapes dataset")
    return [image["description"] for image in images]


def main(argv: list[str] | None = None) -> int:
    return run_command(_arithmetic, argv)


def _arithmetic(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.evaluation.arithmetic import attribute_swap_rate, query
    from vse_tf.evaluation.encode import encode_split
    from vse_tf.training.run import restore_run, save_metrics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--evaluate", action="store_true", help="measure colour and shape swaps")
    parser.add_argument("--image", help="query image file")
    parser.add_argument("--minus", help="text to subtract")
    parser.add_argument("--plus", help="text to add")
    parser.add_argument("--k", type=int, default=5)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if not args.evaluate and not (args.image and args.minus and args.plus):
        parser.error("give --evaluate, or --image with --minus and --plus")
    run = restore_run(args.run)
    encoded = encode_split(run, args.split)
    if args.image:
        ids = list(encoded.split.image_refs)
        for name, score in query(
            run, Path(args.image).read_bytes(), args.minus, args.plus, encoded.image_embeddings, ids, args.k
        ):
            print(f"{score:.4f}  {name}")
    if args.evaluate:
        descriptions = split_descriptions(run.config.data.json_path(), args.split)
        results = {}
        print(f"{'swap':<8} {'queries':>8} {'top-1 has it %':>15} {'chance %':>9}")
        for attribute in ("colour", "shape"):
            result = attribute_swap_rate(run, encoded, descriptions, attribute)
            results[f"{attribute}_swap_success"] = result.success_rate
            results[f"{attribute}_swap_chance"] = result.chance_rate
            print(f"{attribute:<8} {result.queries:8d} {result.success_rate:15.1f} {result.chance_rate:9.1f}")
        print(f"results: {save_metrics(run, results, f'arithmetic_{args.split}.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
