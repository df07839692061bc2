"""Reference: the VSE++ training step in PyTorch at its default shapes, for bench/train.py to be compared with.

    python bench/vsepp_step.py [--steps 20] [--lengths 8:14] [--threads 2]

The model as the VSE++ paper (Faghri et al., 2018) describes it, written here from that
description: precomputed 4096-d image features -> Linear 1024 -> L2 normalisation; word ids ->
300-d embedding -> one-layer GRU 1024 over the packed captions (``pack_padded_sequence``, so
no padded step is computed) -> last hidden state -> L2 normalisation; the hinge triplet loss
with margin 0.2 on the hardest negative of each row and column (max violation), summed over
the batch; Adam at 2e-4 with the gradients' global norm clipped to 2. Xavier-uniform
projection, PyTorch's default initialisation elsewhere; vocabulary 10,002 ids as
bench/train.py.

Each step gets its own batch of 128 pairs: random features and captions whose lengths are
drawn uniformly from ``--lengths``, sorted longest first as VSE++'s loader sorts them. Times
``--steps`` steps after as many warm-up steps, with ``torch.set_num_threads(--threads)``.
Counted work as bench/train.py (real tokens only). Prints a table (``--json``: one JSON line)
and writes bench/results/vsepp_step.json unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from results_file import write_results
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from vsepp_shapes import BATCH, EMBED, FEATURES, GRU, WORDS, step_gflop

VOCABULARY = 10002


def l2_normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


class ImageEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(FEATURES, EMBED)
        bound = np.sqrt(6.0) / np.sqrt(FEATURES + EMBED)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return l2_normalised(self.fc(features))


class TextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, WORDS)
        self.gru = nn.GRU(WORDS, GRU, num_layers=1, batch_first=True)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True)
        _, last = self.gru(packed)  # [1, B, GRU]: each caption's state after its last word
        return l2_normalised(last[0])


def max_violation_loss(images: torch.Tensor, captions: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    scores = images @ captions.t()
    positives = scores.diag().view(-1, 1)
    cost_caption = (margin + scores - positives).clamp(min=0)  # image i against caption j
    cost_image = (margin + scores - positives.t()).clamp(min=0)  # caption j against image i
    own = torch.eye(scores.size(0), dtype=torch.bool)
    cost_caption = cost_caption.masked_fill(own, 0)
    cost_image = cost_image.masked_fill(own, 0)
    return cost_caption.max(dim=1)[0].sum() + cost_image.max(dim=0)[0].sum()


def batches(steps: int, lengths: tuple[int, int], seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """``steps`` batches of (features, ids padded to the longest, lengths), longest caption first."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(steps):
        drawn = np.sort(rng.integers(lengths[0], lengths[1] + 1, size=BATCH))[::-1]
        ids = np.zeros((BATCH, drawn[0]), dtype=np.int64)
        for row, length in enumerate(drawn):
            ids[row, :length] = rng.integers(2, VOCABULARY, size=length)
        features = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
        made.append((torch.from_numpy(features), torch.from_numpy(ids), torch.from_numpy(drawn.copy())))
    return made


def matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def run(steps: int, lengths: tuple[int, int], threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    image, text = ImageEncoder(), TextEncoder()
    parameters = [*image.parameters(), *text.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=2e-4)

    def step(features, ids, drawn):
        loss = max_violation_loss(image(features), text(ids, drawn))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 2.0)
        optimizer.step()
        return loss

    warm_up, timed = batches(steps, lengths, seed=1), batches(steps, lengths, seed=0)
    for batch in warm_up:
        step(*batch)
    started = time.perf_counter()
    for batch in timed:
        loss = step(*batch)
    loss.item()
    seconds = time.perf_counter() - started
    tokens_per_caption = float(sum(int(b[2].sum()) for b in timed)) / (steps * BATCH)
    steps_per_second = steps / seconds
    flop = step_gflop(tokens_per_caption)
    peak = matmul_gflops()
    return {
        "torch": torch.__version__,
        "threads": threads,
        "steps": steps,
        "lengths": f"{lengths[0]}:{lengths[1]}",
        "matmul_gflops": peak,
        "steps_per_s": steps_per_second,
        "pairs_per_s": steps_per_second * BATCH,
        "tokens_per_s": steps_per_second * BATCH * tokens_per_caption,
        "tokens_per_caption": tokens_per_caption,
        "gflop_per_step": flop,
        "achieved_gflops": flop * steps_per_second,
        "fraction_of_matmul": flop * steps_per_second / peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lengths", default="8:14", help="LOW:HIGH tokens per caption, drawn per caption")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/vsepp_step.json")
    args = parser.parse_args(argv)
    low, high = (int(part) for part in args.lengths.split(":"))
    result = run(args.steps, (low, high), args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"torch {result['torch']}, {args.threads} threads; float32 matmul 2048^2: {result['matmul_gflops']:.1f}")
        print(f"{'steps/s':>8} {'pairs/s':>9} {'tokens/s':>9} {'GFLOP/s':>9} {'of matmul':>10}")
        print(
            f"{result['steps_per_s']:8.2f} {result['pairs_per_s']:9.0f} {result['tokens_per_s']:9.0f} "
            f"{result['achieved_gflops']:9.1f} {100 * result['fraction_of_matmul']:9.0f}%"
        )
    if not args.no_write:
        path = write_results("vsepp_step", result)
        if not args.json:
            print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
