"""`fer-dist report` (figures, tables, md/html/json) and `fer-dist sharpness` (the Keskar probe)."""
from __future__ import annotations

import argparse
from pathlib import Path

from fer_dist import atomic
from fer_dist.console import console
from fer_dist.errors import UserError
from fer_dist.report import figures, render, tables
from fer_dist.report.runs import Run, load_run, safe_dirname, unique_names

FORMATS = {"md": ("md",), "html": ("html",), "json": (), "all": ("md", "html")}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` and `sharpness` subcommands."""
    p = sub.add_parser(
        "report", help="figures and tables for one or more run directories",
        description="Learning curves, confusion heatmaps and the peak-window table for each run "
                    "directory (only metrics.jsonl is required), one comparison table across runs "
                    "(fold runs grouped as mean ± sample std), written as report.json plus "
                    "markdown and/or self-contained HTML.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the run directory for one run, ./report for several)")
    p.add_argument("--format", choices=sorted(FORMATS), default="all",
                   help="report.json is always written; md or html adds that file, all adds both "
                        "(default: all)")
    p.set_defaults(func=report_command)

    s = sub.add_parser(
        "sharpness", help="Keskar epsilon-sharpness of a run's checkpoint",
        description="The largest relative increase of the training loss within the box "
                    "|dw| <= epsilon*(|w|+1) around the checkpoint's weights, found by projected "
                    "sign-gradient ascent on a fixed, seeded training subset (BatchNorm in eval "
                    "mode): 100*(max_loss - loss0)/(1 + loss0). Stored in summary.json.")
    s.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    s.add_argument("--epsilon", type=float, default=1e-3, help="box size (default 1e-3)")
    s.add_argument("--steps", type=int, default=10, help="ascent steps (default 10)")
    s.add_argument("--samples", type=int, default=256,
                   help="training images in the fixed subset (default 256; fewer if the split is smaller)")
    s.add_argument("--seed", type=int, default=0, help="seed for the subset (default 0)")
    s.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint to probe (default best)")
    s.add_argument("--shards", default=None,
                   help="the run's shards folder, if it moved (default: data.shards of config.yaml)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run the probe (default auto: cuda when available)")
    s.set_defaults(func=sharpness_command)


def report_command(args: argparse.Namespace) -> int:
    runs = [load_run(p) for p in args.run_dirs]
    out = args.out or (args.run_dirs[0] if len(runs) == 1 else Path("report"))
    written = build_report(runs, Path(out), args.format)
    for path in written:
        console.print(f"wrote {path}")
    return 0


def build_report(runs: list[Run], out: Path, fmt: str = "all") -> list[Path]:
    """Figures per run, the comparison table on the terminal, report.json (+ md/html) in `out`."""
    keys = unique_names(runs)
    reports = [render.RunReport(k, r, tables.run_numbers(r)) for k, r in zip(keys, runs)]
    try:
        written = _write_figures(reports, out)
        groups = [render.GroupReport(g.label, [reports[i] for i in g.members],
                                     tables.aggregate([reports[i].numbers for i in g.members]))
                  for g in tables.fold_groups(runs, keys)]
        console.print(render.rich_table(reports, groups))
        written.append(atomic.write_text(
            out / "report.json", render.json_text(render.to_json(reports, groups, out))))
        if "md" in FORMATS[fmt]:
            written.append(atomic.write_text(out / "report.md",
                                               render.to_markdown(reports, groups, out)))
        if "html" in FORMATS[fmt]:
            written.append(atomic.write_text(out / "report.html", render.to_html(reports, groups)))
    except OSError as err:
        raise UserError(f"cannot write the report into {out}: {err.strerror or err}; "
                        "choose a writable folder with --out") from None
    return written


def _write_figures(reports: list[render.RunReport], out: Path) -> list[Path]:
    """curves.png and confusion.png per run: in `out` for one run, in out/<run-name>/ for several."""
    written: list[Path] = []
    used: set[str] = set()
    for r in reports:
        folder = out
        if len(reports) > 1:
            name, i = safe_dirname(r.key), 2
            while name in used:
                name, i = f"{safe_dirname(r.key)}-{i}", i + 1
            used.add(name)
            folder = out / name
        r.figures["curves"] = figures.plot_curves(r.run, folder / "curves.png", r.numbers)
        panels = _confusion_panels(r.run)
        if panels:
            size = len(panels[0][1])
            r.figures["confusion"] = figures.plot_confusion(
                r.run.classes(size), panels, f"Confusion matrices · {figures.run_title(r.run)}",
                folder / "confusion.png")
        written += r.figures.values()
    return written


def _confusion_panels(run: Run) -> list[tuple[str, list[list[int]]]]:
    """(label, matrix) for the best-val epoch's validation and the test split, where logged."""
    epoch = tables.best_val_epoch(run)
    panels = []
    val = tables.val_confusion(run, epoch)
    if val:
        panels.append((f"validation, best epoch {epoch}", val))
    test = tables.test_confusion(run)
    if test and (not panels or len(test) == len(panels[0][1])):
        panels.append(("test, best-val checkpoint", test))
    return panels


def sharpness_command(args: argparse.Namespace) -> int:
    from fer_dist.report import sharpness   # imports torch and the training code: only when asked

    result = sharpness.probe_run(args.run_dir, epsilon=args.epsilon, steps=args.steps,
                                 samples=args.samples, seed=args.seed, which=args.checkpoint,
                                 shards=args.shards, device=args.device)
    console.print(f"sharpness {result['value']:.4g} (epsilon {result['epsilon']:g}, "
                  f"{result['steps']} steps, {result['samples']} samples): loss "
                  f"{result['loss0']:.4f} -> {result['max_loss']:.4f}; "
                  f"written to {args.run_dir / 'summary.json'}", soft_wrap=True)
    return 0
