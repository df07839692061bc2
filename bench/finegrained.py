"""Experiment: binary vs fine-grained labels in the pairwise similarity loss, by category MAP.

    python -m bench.finegrained                       # the embedded shapes set (generated if missing)
    python -m bench.finegrained --data.format wikipedia --data.data_dir data/wikipedia \
        --results_name finegrained_wikipedia          # any labelled set; every --section.field flag works

Four steps on one labelled dataset, one config:
1. the siamese text network (``train.siamese``'s library call) learns text similarity from
   the training texts' categories and writes one vector per training text;
2. a model trained with ``loss.kind=pairwise`` (label 1 for a text and its own image, 0
   for every other pair of the batch);
3. the same model with ``loss.kind=category`` (label 1 for every same-category pair: the
   hard labels that fine-grained labels refine);
4. the same model with ``loss.kind=finegrained`` (labels from the siamese vectors).
All three are evaluated on the test split: image -> text and text -> image MAP (relevant =
same category, :func:`vse_tf.evaluation.metrics.evaluate_map`) and R@1. Prints a table and writes
``bench/results/<results_name>.json`` with the config, timings and the siamese network's
label separation on the validation texts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from bench.results_file import write_results
from train.flags import add_config_flags
from vse_tf.config import (
    DataConfig,
    ExperimentConfig,
    ImageTowerConfig,
    LossConfig,
    SiameseConfig,
    TextTowerConfig,
    TrainConfig,
    flat_fields,
    with_overrides,
)
from vse_tf.data.splits import load_split
from vse_tf.evaluation.encode import evaluate_run
from vse_tf.model.siamese import encode_texts, label_separation, texts_with_categories, train_siamese
from vse_tf.training.trainer import train

KINDS = ("pairwise", "category", "finegrained")
ROW_NAMES = {"pairwise": "binary: image", "category": "binary: category", "finegrained": "fine-grained"}


def bench_config(run_dir: Path, epochs: int) -> ExperimentConfig:
    """A CPU-sized model for the shapes set: small CNN at 64 px, GRU 256 text tower, D=256.

    The GRU, not the graph encoder: a shapes caption's category is the shape of the *larger*
    of two objects ("a small red star left of a big circle"), and a bag of words cannot
    tell which shape "big" belongs to. ``--text.encoder graph`` runs the paper's encoder.
    """
    return ExperimentConfig(
        embed_dim=256,
        data=DataConfig(data_dir="data/shapes", dataset="shapes"),
        image=ImageTowerConfig(
            backbone="small_cnn", image_size=64, cnn_filters=(32, 64, 128, 256), cnn_convs_per_stage=1
        ),
        text=TextTowerConfig(max_length=24, word_dim=128, gru_units=256, encoder="gru"),
        loss=LossConfig(kind="pairwise", pairwise_scale=10.0, pairwise_offset=0.5),
        train=TrainConfig(
            run_dir=str(run_dir),
            epochs=epochs,
            batch_size=128,
            learning_rate=1e-3,
            lr_decay_epochs=max(1, epochs * 2 // 3),
            lr_decay_factor=0.1,
            validation_max_images=500,
            monitor="val_mean_map",  # the measure compared here; val_rsum would pick at random for fine-grained
        ),
        siamese=SiameseConfig(embed_dim=64, epochs=2, batch_size=128, learning_rate=1e-3),
    )


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    base = ExperimentConfig.load(args.config) if args.config else bench_config(Path(args.run_dir), args.epochs)
    given = {
        dotted: getattr(args, dotted) for dotted in flat_fields(ExperimentConfig) if getattr(args, dotted) is not None
    }
    return with_overrides(base, given)


def ensure_shapes(config: ExperimentConfig) -> None:
    """Generates the embedded dataset when the config points at a missing shapes set."""
    data = config.data
    if data.format == "karpathy" and data.dataset == "shapes" and not data.json_path().exists():
        from vse_tf.data.synthetic.shapes import generate_shapes_dataset

        generate_shapes_dataset(data.data_dir)


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1)}


def run_siamese(config: ExperimentConfig) -> dict:
    result, cost = timed(train_siamese, config, load_split(config, "train"), verbose=2)
    result.text_vectors.save(config.loss.text_vectors)
    val_texts, val_categories = texts_with_categories(load_split(config, "val"))
    separation = label_separation(encode_texts(result.network.encoder, result.tokenizer, val_texts), val_categories)
    return {**cost, "final_loss": round(result.history[-1], 4), "val_label_separation": separation}


def run_kind(config: ExperimentConfig, kind: str) -> dict:
    run_dir = Path(config.train.run_dir) / kind
    kind_config = with_overrides(config, {"loss.kind": kind, "train.run_dir": str(run_dir)})
    run, cost = timed(train, kind_config, verbose=2)
    metrics = evaluate_run(run, "test")
    keys = ("i2t_map", "t2i_map", "mean_map", "i2t_r1", "t2i_r1")
    return {**cost, **{key: round(float(metrics[key]), 4) for key in keys}}


def format_table(results: dict) -> str:
    lines = [
        f"{'labels':<18}{'i2t MAP':>9}{'t2i MAP':>9}{'mean':>8}{'i2t R@1':>9}{'t2i R@1':>9}{'train s':>9}",
        "-" * 71,
    ]
    for kind in KINDS:
        row = results[kind]
        name = ROW_NAMES[kind]
        lines.append(
            f"{name:<18}{row['i2t_map']:>9.4f}{row['t2i_map']:>9.4f}{row['mean_map']:>8.4f}"
            f"{row['i2t_r1']:>9.1f}{row['t2i_r1']:>9.1f}{row['wall_s']:>9.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser)
    parser.add_argument("--run_dir", default="runs/bench_finegrained", help="base of the run directories")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each model")
    parser.add_argument("--results_name", default="finegrained", help="bench/results/<name>.json")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    config = with_overrides(
        config,
        {
            "train.run_dir": args.run_dir,
            "loss.text_vectors": config.loss.text_vectors or str(Path(args.run_dir) / "text_vectors.npz"),
        },
    )
    ensure_shapes(config)
    total_wall, total_cpu = time.perf_counter(), time.process_time()
    results = {"siamese": run_siamese(config)}
    print(json.dumps({"siamese": results["siamese"]}), flush=True)
    for kind in KINDS:
        results[kind] = run_kind(config, kind)
    results["total"] = {
        "wall_s": round(time.perf_counter() - total_wall, 1),
        "cpu_s": round(time.process_time() - total_cpu, 1),
    }
    table = format_table(results)
    print(f"{config.data.dataset} test split, MAP by category (relevant = same category)")
    print(table)
    path = write_results(
        args.results_name, {"config": dataclasses.asdict(config), "results": results, "table": table.splitlines()}
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
