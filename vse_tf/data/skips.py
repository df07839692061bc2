"""Counting what the data stages skip or repair, so nothing is lost silently.

A :class:`SkipLog` is passed explicitly to the readers and the screening stage; each
skipped record is counted under a reason (``missing_file``, ``truncated``, ...) with
the file (and line or field) it came from. Plain Python.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from vse_tf.files import write_text_atomic

# Examples kept per reason in ``skipped.json`` (the counts are always complete).
MAX_EXAMPLES = 100


class SkipLog:
    """Records skipped and repaired records by reason."""

    def __init__(self) -> None:
        self.skipped: collections.Counter[str] = collections.Counter()
        self.repaired: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def skip(self, reason: str, where: str, records: int = 1) -> None:
        """Counts ``records`` records dropped for ``reason``; ``where`` names the file."""
        self.skipped[reason] += records
        self._example(reason, where)

    def repair(self, reason: str, where: str) -> None:
        """Counts one record kept after a repair (e.g. invalid UTF-8 replaced)."""
        self.repaired[reason] += 1
        self._example(reason, where)

    def merge(self, other: SkipLog) -> None:
        """Adds another log's counts and example files to this one."""
        self.skipped.update(other.skipped)
        self.repaired.update(other.repaired)
        for reason, files in other.examples.items():
            for where in files:
                self._example(reason, where)

    def _example(self, reason: str, where: str) -> None:
        examples = self.examples[reason]
        if len(examples) < MAX_EXAMPLES and where not in examples:
            examples.append(where)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self, label: str = "data") -> str:
        """One log line: ``data: skipped 5 records (missing_file 1, ...); repaired 1 (...)``."""

        def counts(counter: collections.Counter[str]) -> str:
            return ", ".join(f"{reason} {count}" for reason, count in sorted(counter.items()))

        line = f"{label}: skipped {self.total_skipped} records"
        if self.skipped:
            line += f" ({counts(self.skipped)})"
        if self.repaired:
            line += f"; repaired {sum(self.repaired.values())} ({counts(self.repaired)})"
        return line

    def to_dict(self) -> dict:
        return {
            "skipped": dict(sorted(self.skipped.items())),
            "repaired": dict(sorted(self.repaired.items())),
            "files": {reason: list(files) for reason, files in sorted(self.examples.items())},
        }

    def write(self, path: str | Path) -> Path:
        """Writes :meth:`to_dict` as JSON (atomic rename)."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", "backslashreplace")
        return path
