"""Rendering the report: one comparison table (rich, markdown, HTML) and report.json.

Numbers are stored as fractions in report.json and shown as percentages elsewhere. Runs that
form a fold group share one table row of "mean ± std" (sample std, ddof=1) over their folds.
"""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rich import box
from rich.table import Table

from fer_dist.report import tables
from fer_dist.report.figures import run_title
from fer_dist.report.runs import Run

Numbers = dict[str, Any]


@dataclass
class RunReport:
    """One run with its numbers and the figures written for it."""
    key: str
    run: Run
    numbers: Numbers
    figures: dict[str, Path] = field(default_factory=dict)


@dataclass
class GroupReport:
    """Runs that differ only in fold, with mean/std/n per number (tables.aggregate)."""
    label: str
    members: list[RunReport]
    stats: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Column:
    """One table column: its header, a run's cell and a fold group's cell."""
    header: str
    single: Callable[[Numbers], str]
    group: Callable[[dict[str, dict[str, Any]]], str]
    short: str | None = None       # header in the terminal table; None: column left out there


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal; a dash when absent."""
    return "–" if value is None else f"{100 * value:.1f}"


def _mean_std(key: str, scale: float = 100.0, digits: int = 1) -> Callable[[dict], str]:
    def cell(stats: dict[str, dict[str, Any]]) -> str:
        s = stats.get(key)
        if not s:
            return "–"
        text = f"{scale * s['mean']:.{digits}f}"
        return text if s["std"] is None else f"{text} ± {scale * s['std']:.{digits}f}"
    return cell


def _with_epochs(value: str, first: str, last: str | None = None) -> Callable[[Numbers], str]:
    def cell(n: Numbers) -> str:
        span = f"{n[first]}" if last is None else f"{n[first]}–{n[last]}"
        return f"{pct(n[value])} (ep {span})"
    return cell


def _test_cell(n: Numbers) -> str:
    if n["test_acc"] is None:
        return "–"
    if n["test_ci_low"] is None:
        return pct(n["test_acc"])
    return (f"{pct(n['test_acc'])} [{pct(n['test_ci_low'])}, {pct(n['test_ci_high'])}] "
            f"({n['test_correct']}/{n['test_count']})")


def _sharp_cell(n: Numbers) -> str:
    if n["sharpness"] is None:
        return "–"
    eps = n["sharpness_epsilon"]
    return f"{n['sharpness']:.3g}" + (f" (ε={eps:g})" if isinstance(eps, (int, float)) else "")


def _plain(key: str) -> Callable[[Numbers], str]:
    return lambda n: pct(n[key])


COLUMNS: tuple[Column, ...] = (
    Column("Epochs", lambda n: str(n["epochs"]), _mean_std("epochs", 1.0, 0), "Ep"),
    Column("Peak val % (epoch)", _with_epochs("peak_val_acc", "peak_epoch"),
           _mean_std("peak_val_acc"), "Peak val %"),
    Column("Peak-window mean %", _with_epochs("window_mean", "window_first", "window_last"),
           _mean_std("window_mean"), "Peak-window\nmean %"),
    Column("Best 10-epoch mean %", _with_epochs("best_rolling_mean", "best_rolling_first",
                                                "best_rolling_last"),
           _mean_std("best_rolling_mean"), "Best 10-ep\nmean %"),
    Column("Final val %", _plain("final_val_acc"), _mean_std("final_val_acc"), "Final\nval %"),
    Column("Test % [Wilson 95%]", _test_cell, _mean_std("test_acc"), "Test %\n[95% CI]"),
    *(Column(f"{k.split('_')[0].capitalize()} {k.split('_')[1]} %", _plain(k), _mean_std(k),
             "F1\nmacro %" if k == "f1_macro" else None)
      for k in tables.METRIC_KEYS),
    Column("P/R/F1 from", lambda n: n["metrics_from"] or "–", lambda s: "per fold"),
    Column("Sharpness", _sharp_cell, _mean_std("sharpness", 1.0, 3), "Sharp-\nness"),
)
HEADERS = ("Run", "Setting", *(c.header for c in COLUMNS))


def comparison_rows(runs: Sequence[RunReport], groups: Sequence[GroupReport]) -> list[list[str]]:
    """Table rows: each fold group as one mean ± std row (where its first fold stands), others as is."""
    grouped = {id(m): g for g in groups for m in g.members}
    rows, done = [], set()
    for report in runs:
        group = grouped.get(id(report))
        if group is None:
            rows.append([report.key, run_title(report.run), *(c.single(report.numbers)
                                                              for c in COLUMNS)])
        elif id(group) not in done:
            done.add(id(group))
            setting = run_title(group.members[0].run).rsplit(" · fold", 1)[0]
            rows.append([group.label, setting, *(c.group(group.stats) for c in COLUMNS)])
    return rows


def rich_table(runs: Sequence[RunReport], groups: Sequence[GroupReport]) -> Table:
    """The comparison table for the terminal: the main columns only (the files have them all)."""
    keep = [i for i, c in enumerate(COLUMNS) if c.short]
    table = Table(title="fer-dist report", header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("Run", overflow="fold", min_width=8)
    for i in keep:
        table.add_column(COLUMNS[i].short, justify="right", overflow="fold")
    for row in comparison_rows(runs, groups):
        table.add_row(row[0], *(row[2 + i] for i in keep))
    return table


def to_json(runs: Sequence[RunReport], groups: Sequence[GroupReport], out_dir: Path) -> dict:
    """report.json: every number under the run's name, plus fold groups and the definitions."""
    return {
        "format_version": 1,
        "definitions": tables.DEFINITIONS,
        "runs": {r.key: {"path": str(r.run.path), "meta": _meta(r.run), "numbers": r.numbers,
                         "figures": {k: _rel(p, out_dir) for k, p in r.figures.items()}}
                 for r in runs},
        "groups": {g.label: {"runs": [m.key for m in g.members],
                             "folds": [m.run.fold for m in g.members], "stats": g.stats}
                   for g in groups},
    }


def _meta(run: Run) -> dict[str, Any]:
    s = run.summary
    return {"name": run.name, "dataset": run.dataset, "modality": run.modality,
            "schedule": run.schedule, "optimizer": run.optimizer, "fold": run.fold,
            **{k: s.get(k) for k in ("world_size", "global_batch", "wall_time_s", "requeues",
                                      "restarts", "split_counts", "best_epoch")}}


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def to_markdown(runs: Sequence[RunReport], groups: Sequence[GroupReport], out_dir: Path) -> str:
    """report.md: the comparison table, then one section per run with its figures linked."""
    lines = ["# fer-dist report", "", _md_table(HEADERS, comparison_rows(runs, groups)), "",
             *_legend(), ""]
    for r in runs:
        lines += [f"## {r.key}", "", f"{run_title(r.run)} — `{r.run.path}`", "",
                  _md_table(HEADERS[2:], [[c.single(r.numbers) for c in COLUMNS]]),
                  ""]
        lines += [f"![{name} of {r.key}]({_rel(p, out_dir)})" for name, p in r.figures.items()]
        lines.append("")
    return "\n".join(lines)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def _legend() -> list[str]:
    return ["Accuracies in percent. Peak-window mean: mean validation accuracy over epochs "
            "[peak-5, peak+4], shifted to stay inside the run. Best 10-epoch mean: the highest "
            "10-epoch rolling mean. Test: best-validation checkpoint, Wilson 95% interval "
            "(correct/count). Fold groups: mean ± sample std (ddof=1) over folds. Sharpness: "
            "Keskar et al.'s epsilon-sharpness, 100·(max loss − loss)/(1 + loss)."]


def to_html(runs: Sequence[RunReport], groups: Sequence[GroupReport]) -> str:
    """A self-contained page: inline CSS, figures embedded as base64 data URIs."""
    esc = html.escape
    body = ["<h1>fer-dist report</h1>", _html_table(HEADERS, comparison_rows(runs, groups)),
            *(f"<p class='legend'>{esc(t)}</p>" for t in _legend())]
    for r in runs:
        body += [f"<h2>{esc(r.key)}</h2>",
                 f"<p>{esc(run_title(r.run))} — <code>{esc(str(r.run.path))}</code></p>",
                 _html_table(HEADERS[2:], [[c.single(r.numbers) for c in COLUMNS]])]
        for name, path in r.figures.items():
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            body.append(f"<img alt='{esc(name)} of {esc(r.key)}' "
                        f"src='data:image/png;base64,{data}'>")
    return HTML_PAGE.format(body="\n".join(body))


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    cells = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>"


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fer-dist report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
.legend {{ color: #555; font-size: 0.9em; max-width: 60em; }}
</style></head><body>
{body}
</body></html>
"""


def json_text(data: dict) -> str:
    """JSON with NaN/Infinity refused (they are not JSON); tables only emit finite numbers."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"
