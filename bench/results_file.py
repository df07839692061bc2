"""Shared by the benchmarks: where results go and what machine they came from."""

from __future__ import annotations

import platform
from pathlib import Path

from vse_tf.files import write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict, directory: Path | None = None) -> Path:
    """Writes ``bench/results/<name>.json`` (or ``directory/<name>.json``) with the machine's description added."""
    path = (directory or RESULTS_DIR) / f"{name}.json"
    machine = {"machine": platform.platform(), "processor": platform.processor()}
    write_json_atomic(path, {**machine, **payload})
    return path
