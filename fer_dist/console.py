"""Terminal output: rich progress bars on a terminal, one plain summary line in logs and CI."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

# In logs (Slurm, CI, pipes) rich would wrap at 80 columns; a fixed 120 keeps lines and tables whole.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def is_interactive() -> bool:
    """True when stdout is a terminal (rich bars); False in Slurm logs, pipes and CI."""
    return console.is_terminal and sys.stdout.isatty()


class _Plain:
    """Progress stand-in for logs: counts items and prints one summary line at the end."""

    def __init__(self, label: str, unit: str):
        self.label, self.unit, self.done, self.t0 = label, unit, 0, time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n

    def finish(self) -> None:
        dt = time.perf_counter() - self.t0
        rate = self.done / dt if dt > 0 else float("inf")
        console.print(f"{self.label}: {self.done} {self.unit} in {dt:.1f}s ({rate:.1f} {self.unit}/s)")


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else "", style="cyan")


class _Rich(_Plain):
    def __init__(self, label: str, unit: str, total: int | None):
        super().__init__(label, unit)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), _RateColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True)
        self.task = self.progress.add_task(label, total=total)
        self.progress.start()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self.progress.advance(self.task, n)

    def finish(self) -> None:
        self.progress.stop()
        super().finish()


@contextmanager
def progress(label: str, total: int | None, unit: str = "items") -> Iterator[_Plain]:
    """A progress bar (terminal) or a summary line (logs); use `.advance(n)` inside the block."""
    bar = _Rich(label, unit, total) if is_interactive() else _Plain(label, unit)
    try:
        yield bar
    finally:
        if isinstance(bar, _Rich):
            bar.progress.stop()
    bar.finish()
