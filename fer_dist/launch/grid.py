"""Grid files: a YAML list of config overrides that `fer-dist submit --grid` runs as one job array.

    grid:                      # every combination of these values ...
      data.shards: [shards/demo-visible, shards/demo-infrared]
      optim.schedule: [cosine, none]
    runs:                      # ... for each of these entries (optional)
      - {data.fold: 0}
      - {data.fold: 1}

Each combination is one run: its overrides apply after the base config and --set, and its run name
is the base name plus the values (`demo-demo-visible-cosine-fold0`) unless the entry sets `name`.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fer_dist.errors import UserError

SECTIONS = ("grid", "runs")


@dataclass(frozen=True)
class GridEntry:
    """One run of a grid: its name suffix and its `key=value` overrides."""
    values: dict[str, Any]

    def overrides(self) -> list[str]:
        return [f"{key}={format_value(value)}" for key, value in self.values.items()]

    def suffix(self) -> str:
        return "-".join(_slug(key, value) for key, value in self.values.items() if key != "name")


def load_grid(path: str | Path) -> list[GridEntry]:
    """Read and expand a grid file; every mistake is a UserError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}") from None
    return expand(raw, source=str(path))


def expand(raw: Any, source: str = "grid") -> list[GridEntry]:
    """`runs` entries x the product of `grid` values, in file order."""
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{source}: expected a mapping with `grid:` and/or `runs:` (see "
                        f"slurm/README.md), got {raw!r}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise UserError(f"{source}: unknown section {unknown[0]!r}; a grid file has `grid:` "
                        "(key: [values]) and/or `runs:` (a list of key: value mappings)")
    axes = raw.get("grid") or {}
    runs = raw.get("runs") or [{}]
    if not isinstance(axes, dict):
        raise UserError(f"{source}: grid must map config keys to lists of values, got {axes!r}")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{source}: runs must be a list of mappings (key: value), got {runs!r}")
    for key, values in axes.items():
        _check_key(key, source, "grid")
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: grid.{key} must be a non-empty list of values, got {values!r}")
    for run in runs:
        for key in run:
            _check_key(key, source, "runs")
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    entries = [GridEntry({**run, **combo}) for run in runs for combo in combos]
    if entries == [GridEntry({})]:
        raise UserError(f"{source}: the grid is empty: give grid values or runs entries")
    return entries


def _check_key(key: Any, source: str, section: str) -> None:
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*", key):
        raise UserError(f"{source}: {section} key {key!r} is not a dotted config key "
                        "like optim.lr")


def format_value(value: Any) -> str:
    """The text of an override that load_config parses back to `value` (YAML, JSON style)."""
    if isinstance(value, str) and yaml.safe_load(value) == value and "=" not in value:
        return value
    return json.dumps(value)


def _slug(key: str, value: Any) -> str:
    """A file-name-safe label: a string's last path part, else the key's last part and the value."""
    if isinstance(value, str):
        text = Path(value).name or value
    else:
        text = key.rsplit(".", 1)[-1] + ("x".join(map(str, value)) if isinstance(value, list)
                                         else str(value).lower())
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


def run_names(base: str, entries: list[GridEntry], source: str = "grid") -> list[str]:
    """The run name of each entry: its own `name`, else base-suffix; duplicates are an error."""
    names = [str(e.values["name"]) if "name" in e.values else f"{base}-{e.suffix()}"
             for e in entries]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise UserError(f"{source}: entries {seen[name] + 1} and {i + 1} would both be named "
                            f"{name!r} (one run directory): give them distinct `name` values")
        seen[name] = i
    return names
