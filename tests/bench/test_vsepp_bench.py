"""bench/vsepp_step.py (the PyTorch VSE++ reference step) and bench/train.py's drawn batches, at tiny shapes."""

import collections
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(monkeypatch, name):
    monkeypatch.syspath_prepend(str(BENCH))  # the benches import their sibling results_file
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vsepp(monkeypatch):
    module = load(monkeypatch, "vsepp_step")
    for name, value in {"BATCH": 6, "FEATURES": 5, "EMBED": 4, "WORDS": 3, "GRU": 4, "VOCABULARY": 12}.items():
        monkeypatch.setattr(module, name, value)
    return module


def test_max_violation_loss_matches_a_double_loop(vsepp):
    import torch

    rng = np.random.default_rng(0)
    images, captions = rng.normal(size=(2, 5, 4))
    scores = images @ captions.T
    want = 0.0
    for i in range(5):  # each image's hardest caption, each caption's hardest image
        want += max(max(0.0, 0.2 + scores[i, j] - scores[i, i]) for j in range(5) if j != i)
        want += max(max(0.0, 0.2 + scores[j, i] - scores[i, i]) for j in range(5) if j != i)
    got = vsepp.max_violation_loss(torch.tensor(images), torch.tensor(captions)).item()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_text_encoder_takes_each_captions_state_after_its_last_word(vsepp):
    import torch

    torch.manual_seed(0)
    encoder = vsepp.TextEncoder().double()
    lengths = [5, 3, 3, 1]  # longest first, as the loader sorts them
    ids = torch.zeros(4, 5, dtype=torch.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(2, 12, (length,))
    got = encoder(ids, torch.tensor(lengths)).detach().numpy()
    gru = {name: p.detach().numpy() for name, p in encoder.gru.named_parameters()}
    table = encoder.embedding.weight.detach().numpy()
    units = 4
    for row, length in enumerate(lengths):  # PyTorch's GRU equations (gates r, z, n), one word at a time
        h = np.zeros(units)
        for word in ids[row, :length].numpy():
            x = gru["weight_ih_l0"] @ table[word] + gru["bias_ih_l0"]
            inner = gru["weight_hh_l0"] @ h + gru["bias_hh_l0"]
            r = 1 / (1 + np.exp(-(x[:units] + inner[:units])))
            z = 1 / (1 + np.exp(-(x[units : 2 * units] + inner[units : 2 * units])))
            n = np.tanh(x[2 * units :] + r * inner[2 * units :])
            h = (1 - z) * n + z * h
        np.testing.assert_allclose(got[row], h / np.linalg.norm(h), atol=1e-10)


def test_a_run_reports_its_rates(vsepp):
    result = vsepp.run(steps=2, lengths=(2, 4), threads=1)
    assert 2 <= result["tokens_per_caption"] <= 4 and result["steps_per_s"] > 0
    assert result["pairs_per_s"] == pytest.approx(result["steps_per_s"] * 6)


def test_train_bench_batches_are_the_drawn_captions_regrouped(monkeypatch):
    train = load(monkeypatch, "train")
    monkeypatch.setattr(train, "BATCH", 8)
    monkeypatch.setattr(train, "FEATURES", 3)
    vocabulary = [f"w{i}" for i in range(20)]

    def rows(window):
        batches = list(train.drawn_batches(6, (2, 7), window, vocabulary).as_numpy_iterator())
        assert len(batches) == 6 and all(b["tokens"].shape[0] == 8 for b in batches)
        assert all(np.any(b["tokens"][:, -1]) for b in batches)  # padded to the batch's longest
        pairs = collections.Counter(
            (tuple(f), tuple(t[t != 0])) for b in batches for f, t in zip(b["image"], b["tokens"])
        )
        return pairs, sum(int(np.sum(b["tokens"] == 0)) for b in batches)

    (plain, plain_padding), (regrouped, padding) = rows(0), rows(3)
    assert regrouped == plain  # the same (features, caption) pairs
    assert all(2 <= len(words) <= 7 for _, words in plain)
    assert padding < plain_padding
