"""Loading a run directory: metrics.jsonl (required), summary.json and config.yaml (optional).

The report works on any folder holding a `metrics.jsonl`, so runs from older versions and other
machines compare; the optional files only add titles, class names, test results and grouping.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fer_dist.errors import UserError

REQUIRED_KEYS = ("epoch", "val_acc")


@dataclass
class Run:
    """One run directory, read and checked; `epochs` is sorted by epoch, one entry per epoch."""
    path: Path
    name: str
    epochs: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def curve(self, key: str) -> list[float | None]:
        """The per-epoch values of one metrics key (None where an epoch lacks it)."""
        return [finite(e.get(key)) for e in self.epochs]

    def epoch_numbers(self) -> list[int]:
        """The logged epochs, ascending (1..N for a complete run)."""
        return [int(e["epoch"]) for e in self.epochs]

    @property
    def dataset(self) -> str | None:
        shards = _dig(self.config, "data", "shards")
        return self.summary.get("dataset") or (Path(shards).name if shards else None)

    @property
    def modality(self) -> str | None:
        return self.summary.get("modality") or self.manifest.get("modality")

    @property
    def schedule(self) -> str | None:
        return self.summary.get("schedule") or _dig(self.config, "optim", "schedule")

    @property
    def optimizer(self) -> str | None:
        if self.summary.get("optimizer"):
            return self.summary["optimizer"]
        name = _dig(self.config, "optim", "name")
        if name and _dig(self.config, "optim", "lars"):
            return f"{name}+lars"
        return name

    @property
    def fold(self) -> int | None:
        fold = self.summary["fold"] if "fold" in self.summary else _dig(self.config, "data", "fold")
        return fold if isinstance(fold, int) and not isinstance(fold, bool) else None

    def classes(self, size: int) -> list[str]:
        """Class names for a size x size confusion matrix: summary, manifest, per-class keys, indices."""
        candidates = [self.summary.get("classes"), self.manifest.get("classes")]
        for epoch in reversed(self.epochs):
            per_class = epoch.get("val_per_class")
            if isinstance(per_class, dict):
                candidates.append(list(per_class))
                break
        for names in candidates:
            if isinstance(names, list) and len(names) == size:
                return [str(n) for n in names]
        return [str(i) for i in range(size)]


def load_run(path: str | Path) -> Run:
    """Read one run directory; a missing folder or a bad metrics.jsonl is a UserError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} not found: give a folder that holds metrics.jsonl "
                        "(written by fer-dist train)")
    epochs = read_metrics(path / "metrics.jsonl")
    summary = _read_optional_json(path / "summary.json")
    config = _read_optional_yaml(path / "config.yaml")
    manifest = _find_manifest(path, config)
    name = summary.get("name") or config.get("name") or path.resolve().name
    return Run(path=path, name=str(name), epochs=epochs, summary=summary, config=config,
               manifest=manifest)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Parse metrics.jsonl; a later line for the same epoch (a resumed run) replaces the earlier."""
    if not path.is_file():
        raise UserError(f"{path} not found: the run directory needs the metrics.jsonl that "
                        "fer-dist train writes")
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    by_epoch: dict[int, dict[str, Any]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg}); fix or delete that line") \
                from None
        _check_record(record, path, lineno)
        by_epoch[record["epoch"]] = record
    if not by_epoch:
        raise UserError(f"{path} holds no epochs: let the run finish at least one epoch")
    return [by_epoch[e] for e in sorted(by_epoch)]


def _check_record(record: Any, path: Path, lineno: int) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object per line, got "
                        f"{type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise UserError(f"{path}:{lineno}: missing key {', '.join(missing)}; each line needs "
                        f"{' and '.join(REQUIRED_KEYS)}")
    epoch = record["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise UserError(f"{path}:{lineno}: epoch = {epoch!r} must be an integer >= 1")
    if finite(record["val_acc"]) is None:
        raise UserError(f"{path}:{lineno}: val_acc = {record['val_acc']!r} must be a finite number")


def _read_optional_json(path: Path) -> dict[str, Any]:
    """An optional JSON mapping: absent or unreadable -> {} (the report says less, but still runs)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_optional_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _find_manifest(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The shards' manifest named by config.yaml, tried as given and beside the run's out_dir."""
    shards = _dig(config, "data", "shards")
    if not isinstance(shards, str):
        return {}
    for base in (Path.cwd(), run_dir.parent.parent, run_dir.parent):
        manifest = _read_optional_json(base / shards / "manifest.json")
        if manifest:
            return manifest
    return {}


def _dig(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def finite(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, null, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def unique_names(runs: list[Run]) -> list[str]:
    """Names to key runs by: the run name, made unique with the folder name (then a counter)."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    names: list[str] = []
    for run in runs:
        name = run.name if counts[run.name] == 1 else f"{run.name} ({run.path.resolve().name})"
        base, i = name, 2
        while name in names:
            name, i = f"{base} #{i}", i + 1
        names.append(name)
    return names


def safe_dirname(name: str) -> str:
    """A folder name for a run's figures: letters, digits, '.', '-' and '_' only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "run"
