"""Shared fixtures: tiny datasets made by the tests themselves, tiny configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig

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
