"""Shared by the benchmarks: where results go and what machine they came from."""

from __future__ import annotations

import json
import platform
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict) -> Path:
    """Writes ``bench/results/<name>.json`` with the machine's description added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    machine = {"machine": platform.platform(), "processor": platform.processor()}
    path.write_text(json.dumps({**machine, **payload}, indent=2) + "\n")
    return path
