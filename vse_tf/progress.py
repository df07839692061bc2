"""A dependency-free progress line on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Carriage-returned ``what: done/total unit, elapsed, left`` on stderr; silent when disabled."""

    def __init__(self, total: int, what: str, enabled: bool = True, unit: str = "chunks"):
        self.total, self.what, self.enabled, self.unit = total, what, enabled, unit
        self.started = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled or self.total <= 0:
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / max(done, 1) * (self.total - done)
        end = "\n" if done >= self.total else ""
        line = f"\r{self.what}: {done}/{self.total} {self.unit}, {elapsed:.0f}s elapsed, ~{left:.0f}s left"
        print(line, end=end, file=sys.stderr, flush=True)
