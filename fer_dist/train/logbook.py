"""What a run leaves behind and shows: metrics.jsonl, learning_curves.csv, summary.json, the terminal.

Every method is safe to call on every rank; only rank 0 writes or prints.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
import torch
from rich.table import Table

from fer_dist import atomic
from fer_dist.console import console, is_interactive

CURVE_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_precision_macro",
                 "val_recall_macro", "val_f1_macro", "val_precision_weighted", "val_recall_weighted",
                 "val_f1_weighted", "images_per_s", "time_s")


class Logbook:
    """Rank-0 writer of the run directory's records and the terminal's progress."""

    def __init__(self, run_dir: Path, is_main: bool, world_size: int = 1):
        self.run_dir, self.is_main, self._world = run_dir, is_main, world_size
        self.metrics_path = run_dir / "metrics.jsonl"
        self._bar: Progress | None = None
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ records
    def write_text(self, name: str, text: str) -> None:
        if self.is_main:
            atomic.write_text(self.run_dir / name, text)

    def write_json(self, name: str, obj: dict) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def records(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def keep_epochs_before(self, epoch: int) -> None:
        """On resume: drop records of `epoch` and later (written after the checkpoint we resume)."""
        if not self.is_main or not self.metrics_path.is_file():
            return
        kept = [r for r in self.records() if r["epoch"] < epoch]
        self.write_text(self.metrics_path.name, "".join(json.dumps(r) + "\n" for r in kept))
        self._write_curves(kept)

    def append_epoch(self, record: dict) -> None:
        if not self.is_main:
            return
        records = [r for r in self.records() if r["epoch"] < record["epoch"]] + [record]
        self.write_text(self.metrics_path.name, "".join(json.dumps(r) + "\n" for r in records))
        self._write_curves(records)

    def _write_curves(self, records: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        self.write_text("learning_curves.csv", buf.getvalue())

    # ------------------------------------------------------------------ terminal
    def info(self, message: str) -> None:
        if self.is_main:
            console.print(message, highlight=False, markup=False)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        """A rich step bar on a terminal; nothing in logs (one line per epoch comes at the end)."""
        self._t0, self._images = time.perf_counter(), 0
        if self.is_main and is_interactive():
            self._bar = Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 transient=True)
            self._task = self._bar.add_task("train", total=steps, completed=done, status="")
            self._bar.start()

    def step(self, loss: torch.Tensor, images: int) -> None:
        """Advance the bar by one optimizer step of `images` images on this rank."""
        if self._bar is None:
            return   # no terminal: nothing to show, and no loss.item() to stall the device
        self._images += images
        rate = self._images * self._world / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, advance=1, status=f"loss {loss.item():.3f}  {rate:.0f} img/s")

    def end_epoch(self, record: dict, epochs: int) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self.info(f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.3g}  "
                  f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}  "
                  f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} "
                  f"f1 {record['val_f1_macro']:.4f}  {record['images_per_s']:.1f} img/s  "
                  f"{record['time_s']:.1f}s")

    def final_table(self, summary: dict) -> None:
        if not self.is_main:
            return
        table = Table(title=f"{summary['name']}: final metrics")
        table.add_column("split")
        for col in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "count"):
            table.add_column(col, justify="right")
        rows = [("val (best epoch %d)" % summary["best_epoch"], summary["best_val"])]
        rows += [(f"test ({k})", v) for k, v in (summary.get("test") or {}).items() if v]
        for label, m in rows:
            table.add_row(label, *(f"{m[c]:.4f}" for c in ("accuracy", "precision_macro",
                                                              "recall_macro", "f1_macro",
                                                              "f1_weighted")), str(m["count"]))
        console.print(table)
