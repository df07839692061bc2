"""TensorBoard projector files for a split: images and captions in the joint space.

Writes into ``log_dir``: a checkpoint holding one ``[N + M, D]`` embedding variable (the
images, then their captions), ``metadata.tsv`` (kind, image id, caption or file name),
``sprite.png`` (a thumbnail per image, a blank tile per caption) and
``projector_config.pbtxt``. ``tensorboard --logdir <log_dir>`` then shows it under
"Projector".
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorboard.plugins import projector

from vse_tf.evaluation.encode import EncodedSplit
from vse_tf.files import write_text_atomic

TILE = 32


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def write_projector(encoded: EncodedSplit, log_dir: str | os.PathLike, max_images: int = 500) -> Path:
    """Writes the projector files for the first ``max_images`` images and their captions."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    split = encoded.split.head(max_images)
    images = encoded.image_embeddings[: split.num_images]
    keep = [index for index, owner in enumerate(encoded.split.caption_to_image) if owner < split.num_images]
    captions = encoded.caption_embeddings[keep]
    points = np.concatenate([images, captions]).astype(np.float32)

    rows = ["kind\timage_id\ttext"]
    rows += [f"image\t{image_id}\t{Path(ref).name}" for image_id, ref in zip(split.image_ids, split.image_refs)]
    rows += [
        f"caption\t{split.image_ids[owner]}\t{_clean(caption)}"
        for caption, owner in zip(split.captions, split.caption_to_image)
    ]
    write_text_atomic(log_dir / "metadata.tsv", "\n".join(rows) + "\n")
    _write_sprite(split.image_refs, len(points), log_dir / "sprite.png")

    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(points, name="embedding"))
    checkpoint.save(str(log_dir / "embedding.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([TILE, TILE])
    projector.visualize_embeddings(str(log_dir), config)
    return log_dir


def _write_sprite(image_refs, total: int, path: Path) -> None:
    """A square grid of ``TILE`` px thumbnails: images first, then white tiles."""
    side = math.ceil(math.sqrt(total))
    sprite = Image.new("RGB", (side * TILE, side * TILE), "white")
    for index, ref in enumerate(image_refs):
        try:
            with Image.open(ref) as image:
                thumbnail = image.convert("RGB").resize((TILE, TILE))
        except OSError:
            continue  # an unreadable file keeps its white tile
        sprite.paste(thumbnail, ((index % side) * TILE, (index // side) * TILE))
    sprite.save(path)
