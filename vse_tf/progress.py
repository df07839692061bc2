"""A progress bar on stderr (rich, which Keras depends on), so that stdout stays the result.

Not ``keras.utils.Progbar``: it writes to stdout, where the search and evaluation commands
print what a script reads.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields ``update(done)``; shows ``description ━━━ done/total unit, elapsed, left`` on stderr."""
    if not enabled or total <= 0:
        yield lambda done: None
        return
    columns = (
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
