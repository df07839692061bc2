"""bench/gpu.py runs (tiny shapes on the CPU) so that it cannot rot before it meets a GPU."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def run(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path, monkeypatch, capsys):
    """In this process (this machine has no GPU): the check comes before any work."""
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the bench imports its sibling results_file
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.main(["--results_dir", str(tmp_path)]) == 0
    assert "no GPU visible" in capsys.readouterr().out and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_tiny_shapes_on_the_cpu_cover_every_case(tmp_path):
    result = run("--tiny", "--allow_cpu", "--steps", "2", "--calls", "5", "--results_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    cases = {(row["batch"], row["precision"], row["xla"]) for row in report["training"]}
    assert cases == {(b, p, x) for b in (8, 16) for p in ("float32", "mixed_float16") for x in (False, True)}
    assert all(row["pairs_per_s"] == pytest.approx(row["steps_per_s"] * row["batch"]) for row in report["training"])
    towers = {(row["tower"], row["batch"]) for row in report["serving"]}
    assert towers == {(t, b) for t in ("text_encoder", "image_encoder") for b in (1, 64)}
    assert all(0 < row["p50_ms"] <= row["p99_ms"] for row in report["serving"])
