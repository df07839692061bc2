"""`make demo`: build the embedded shapes dataset, train, evaluate, export.

    python -m train.demo [--epochs N] [--data_dir data/shapes] [--run_dir runs/demo]

Starts the run directory afresh, prints the test Recall@K table beside the dataset's
ceiling, writes ``<run_dir>/metrics.json`` and exports both towers to ``<run_dir>/models``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from train.flags import add_verbose_flag, run_command
from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig
from vse_tf.data.synthetic.shapes import ShapesConfig, generate_shapes_dataset
from vse_tf.evaluation.reports import format_map_table, format_recall_table
from vse_tf.files import write_json_atomic


def demo_config(data_dir: str, run_dir: str, epochs: int, image_size: int = 64) -> ExperimentConfig:
    """The demo's model and schedule: small CNN + GRU, sum of hinges then max violation.

    Sized so that the whole demo runs in a few minutes on two CPU cores: the cost of a
    step is the CNN over 64x64 images and the GRU over the batch's longest caption.
    """
    return ExperimentConfig(
        embed_dim=512,
        data=DataConfig(data_dir=data_dir, dataset="shapes"),
        image=ImageTowerConfig(
            backbone="small_cnn", image_size=image_size, cnn_filters=(16, 32, 64, 128), cnn_convs_per_stage=1
        ),
        text=TextTowerConfig(max_length=24, word_dim=300, gru_units=512),
        loss=LossConfig(margin=0.2, max_violation=True, warmup_epochs=2),
        train=TrainConfig(
            run_dir=run_dir,
            epochs=epochs,
            batch_size=128,
            learning_rate=2e-3,
            lr_schedule="cosine",
            sampling="image",
            validation_max_images=500,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(_demo, argv)


def _demo(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.evaluation.encode import evaluate_run
    from vse_tf.serving.export import export_run
    from vse_tf.training.run import save_metrics
    from vse_tf.training.trainer import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/shapes")
    parser.add_argument("--run_dir", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--train_images", type=int, default=6000)
    parser.add_argument("--val_images", type=int, default=1000)
    parser.add_argument("--test_images", type=int, default=1000)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    summary = generate_shapes_dataset(
        args.data_dir,
        ShapesConfig(
            image_size=args.image_size,
            train_images=args.train_images,
            val_images=args.val_images,
            test_images=args.test_images,
        ),
    )
    ceiling = summary["test_ceiling"]
    print(f"dataset: {args.data_dir} ({time.perf_counter() - started:.0f}s)", flush=True)

    run_dir = Path(args.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = demo_config(args.data_dir, args.run_dir, args.epochs, args.image_size)
    run = train(config, verbose=1)
    metrics = evaluate_run(run, "test")
    metrics_path = save_metrics(run, metrics)
    paths = export_run(run, run_dir / "models", version=1)

    print()
    test = f"{args.test_images:,} images, {5 * args.test_images:,} captions"
    print(format_recall_table(metrics, title=f"shapes test split ({test})"))
    print(format_map_table(metrics))
    print(f"ceiling R@1 (ties broken at random): i2t {ceiling['i2t_r1']:.1f}  t2i {ceiling['t2i_r1']:.1f}")
    print(f"metrics: {metrics_path}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"total time: {time.perf_counter() - started:.0f}s")
    write_json_atomic(
        run_dir / "demo_summary.json",
        {"seconds": time.perf_counter() - started, "ceiling": ceiling, "metrics": metrics},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
