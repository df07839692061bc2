"""Embed a gallery once with an exported tower and write an index folder.

    python -m export.index --images DIR --model MODELS/image_encoder/1 --out INDEX
    python -m export.index --captions FILE --model MODELS/text_encoder/1 --out INDEX

``--captions`` reads one caption per line (blank lines ignored). Images the model
rejects are skipped and listed in INDEX/index.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vse_tf.serving.index import build_caption_index, build_image_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (searched recursively)")
    source.add_argument("--captions", help="text file, one caption per line")
    parser.add_argument("--model", required=True, help="SavedModel version dir of the matching tower")
    parser.add_argument("--out", required=True, help="index folder to write")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        if args.images:
            index = build_image_index(args.model, args.images, args.batch_size)
        else:
            lines = Path(args.captions).read_text(encoding="utf-8").splitlines()
            index = build_caption_index(args.model, [line.strip() for line in lines if line.strip()])
    except (FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    index.save(args.out)
    print(f"{args.out}: {len(index.ids)} {index.kind}, {len(index.skipped)} skipped")
    for name, reason in index.skipped[:10]:
        print(f"  skipped {name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
