"""Shared fixtures: tiny datasets made by the tests themselves, tiny configs."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig

# A small vocabulary and sentences for exported text towers, and a script that reloads both
# exported towers in a fresh process with TensorFlow only.
VOCABULARY = ["a", "red", "green", "block", "on", "the", "left", "right"]
SENTENCES = ["a red block on the left", "", "GREEN block, right!", "unknown words only " * 50]

RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    # The script imports tensorflow only (TF itself loads parts of keras); no vse_tf code.
    assert "vse_tf" not in sys.modules
    models, images, sentences = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    text = tf.saved_model.load(models + "/text_encoder/1").signatures["serving_default"]
    image = tf.saved_model.load(models + "/image_encoder/1").signatures["serving_default"]
    encoded = tf.stack([tf.io.read_file(path) for path in images])
    print(json.dumps({
        "text": text(sentences=tf.constant(sentences))["embeddings"].numpy().tolist(),
        "image": image(images=encoded)["embeddings"].numpy().tolist(),
        "modules": sorted(m for m in ("vse_tf", "tensorflow_text") if m in sys.modules),
    }))
    """
)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
PLACES = {"left": (0, 8), "right": (8, 16)}


def write_tiny_karpathy(root: Path, images_per_split: dict[str, int], size: int = 16, seed: int = 0) -> Path:
    """A Karpathy-layout dataset of coloured blocks: 'a red block on the left', ..."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    index = 0
    for split, count in images_per_split.items():
        for _ in range(count):
            colour = list(COLOURS)[index % len(COLOURS)]
            place = list(PLACES)[(index // len(COLOURS)) % len(PLACES)]
            pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            start, stop = (value * size // 16 for value in PLACES[place])
            pixels[:, start:stop] = COLOURS[colour]
            filename = f"img_{index:04d}.png"
            Image.fromarray(pixels).save(root / "images" / filename)
            captions = [f"a {colour} block on the {place}", f"the {place} side is {colour}", f"{colour} on {place}"]
            entries.append(
                {
                    "filename": filename,
                    "imgid": index,
                    "split": split,
                    "category": colour,
                    "sentences": [{"raw": caption, "tokens": caption.split()} for caption in captions],
                }
            )
            index += 1
    path = root / "dataset_tiny.json"
    path.write_text(json.dumps({"dataset": "tiny", "images": entries}))
    return path


def tiny_config(data_dir: Path, run_dir: Path, **train_overrides) -> ExperimentConfig:
    """A config small enough to train in seconds on a CPU."""
    return ExperimentConfig(
        embed_dim=16,
        data=DataConfig(data_dir=str(data_dir), dataset="tiny"),
        image=ImageTowerConfig(backbone="small_cnn", image_size=16, cnn_filters=(4, 8)),
        text=TextTowerConfig(max_length=8, word_dim=8, gru_units=16),
        loss=LossConfig(margin=0.2, max_violation=False),
        train=TrainConfig(
            **{
                "run_dir": str(run_dir),
                "epochs": 2,
                "batch_size": 8,
                "learning_rate": 1e-2,
                "lr_decay_epochs": 0,
                **train_overrides,
            }
        ),
    )


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    data_dir = tmp_path / "tiny"
    write_tiny_karpathy(data_dir, {"train": 32, "val": 8, "test": 10})
    return data_dir


def naive_ranks(images, captions, owner):
    """Ranks one query at a time (the reference for every Recall@K); ties count against the query."""
    scores = images @ captions.T
    image_ranks = []
    for i in range(len(images)):
        own = [c for c in range(len(captions)) if owner[c] == i]
        best = max(scores[i, c] for c in own)
        image_ranks.append(sum(1 for c in range(len(captions)) if owner[c] != i and scores[i, c] >= best))
    caption_ranks = []
    for c in range(len(captions)):
        positive = scores[owner[c], c]
        caption_ranks.append(sum(1 for k in range(len(images)) if k != owner[c] and scores[k, c] >= positive))
    return np.array(image_ranks), np.array(caption_ranks)


def naive_recall_at_1(images, captions, owner) -> dict[str, float]:
    """``i2t_r1`` and ``t2i_r1`` (percent) from :func:`naive_ranks` in float64."""
    image_ranks, caption_ranks = naive_ranks(np.float64(images), np.float64(captions), list(owner))
    return {"i2t_r1": 100.0 * np.mean(image_ranks < 1), "t2i_r1": 100.0 * np.mean(caption_ranks < 1)}
