"""VSE++'s default shapes and the work counted per step, shared by bench/train.py (vse_tf) and
bench/vsepp_step.py (the PyTorch reference) so that both report the same FLOP count.

No TensorFlow or torch import: each bench imports this into its own framework's process.
"""

from __future__ import annotations

BATCH, FEATURES, EMBED, WORDS, GRU = 128, 4096, 1024, 300, 1024


def step_gflop(tokens_per_caption: float) -> float:
    """Counted work of one step for captions of this mean length (real tokens, no padding):
    image projection, GRU over the real tokens, similarity; multiply-add = 2, backward = 2x forward."""
    forward = (
        2 * BATCH * FEATURES * EMBED
        + 2 * BATCH * tokens_per_caption * 3 * (WORDS + GRU) * GRU
        + 2 * BATCH * BATCH * EMBED
    )
    return 3 * forward / 1e9
