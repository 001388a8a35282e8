"""`fer-dist submit --wait`: follow submitted jobs to their end, each wait bounded by a deadline.

The state comes from squeue (it needs no accounting database, unlike submitit's own watcher, which
asks sacct), so a job cancelled or killed from outside is seen as such; the rank-0 lines come from
tailing the nodes' logs; the end is summary.json, shown as a table.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit
from rich.table import Table

from fer_dist.console import console, is_interactive
from fer_dist.launch.slurm import run_state

# Slurm states in which a job may still run (REQUEUED and PENDING come between two attempts).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "UNKNOWN"}


class LogTail:
    """The complete lines appended to one log file since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, ""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:                        # not created yet (the job is pending)
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk.decode(errors="replace")).split("\n")
        self.partial = lines.pop()
        return [line.rstrip("\r") for line in lines if line.strip()]


SUBMITIT_INFO = re.compile(r"^submitit (INFO|DEBUG) ")
BOX_DRAWING = re.compile("[\u2500-\u257f]")


def is_progress_line(line: str) -> bool:
    """A line worth showing while following: not submitit's chatter, not the trainer's final
    table (the follower prints its own from summary.json)."""
    if SUBMITIT_INFO.match(line) or BOX_DRAWING.search(line):
        return False
    return not line.strip().endswith("final metrics")


@dataclass
class Followed:
    """One submitted run being followed."""
    name: str
    run_dir: Path
    job: submitit.Job
    cluster: str
    state: str = "SUBMITTED"
    logs: list[LogTail] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # every node's stdout: rank 0 may live on any node (the rendezvous assigns ranks)
        if self.cluster != "debug":            # the debug executor prints to this terminal
            self.logs = [LogTail(Path(self.job.task(i).paths.stdout))
                         for i in range(self.job.num_tasks)]

    def poll_state(self) -> str:
        """The job's current state, in Slurm's words (local jobs: RUNNING, then COMPLETED/FAILED)."""
        if self.cluster == "slurm":
            return slurm_state(str(self.job.job_id), self.run_dir)
        if self.job.state == "RUNNING":
            return "RUNNING"
        return "COMPLETED" if run_state(self.run_dir) == "done" else "FAILED"

    def new_log_lines(self) -> list[str]:
        return [line for log in self.logs for line in log.new_lines() if is_progress_line(line)]


def slurm_state(job_id: str, run_dir: Path) -> str:
    """squeue's state of a job (finished ones included); UNKNOWN when Slurm does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "UNKNOWN"
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return "UNKNOWN"
    states = out.stdout.split()
    if states:
        return states[0]
    # slurmctld forgot the job (MinJobAge passed): judge by what the run left behind
    return "COMPLETED" if run_state(run_dir) == "done" else "ENDED"


def follow(runs: list[Followed], timeout_s: float, poll_s: float = 2.0) -> bool:
    """Print state changes and rank-0 lines until every job ends or the deadline; True if all done."""
    deadline = time.monotonic() + timeout_s
    prefix = (lambda r: f"[{r.name}] ") if len(runs) > 1 else (lambda r: "  ")
    pending = list(runs)
    while pending:
        for run in list(pending):
            state = run.poll_state()
            if state != run.state:
                console.print(f"job {run.job.job_id} ({run.name}): {run.state} -> {state}",
                              soft_wrap=True)
                run.state = state
            for line in run.new_log_lines():
                console.print(prefix(run) + line, markup=False, highlight=False, soft_wrap=True)
            if state not in ACTIVE:
                pending.remove(run)
        if pending and time.monotonic() >= deadline:
            for run in pending:
                console.print(f"stopped following after {timeout_s / 60:.0f} min: job "
                              f"{run.job.job_id} ({run.name}) is still {run.state}; its log: "
                              f"{run.job.paths.stdout}", soft_wrap=True)
            return False
        if pending:
            time.sleep(poll_s)
    return all(run_state(r.run_dir) == "done" for r in runs)


def read_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def metrics_table(summary: dict) -> Table:
    """The final metrics of one run: best-epoch validation and the test splits."""
    columns = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted")
    table = Table(title=f"{summary['name']}: final metrics (requeues {summary.get('requeues', 0)}, "
                        f"restarts {summary.get('restarts', 0)})")
    for col in ("split",) + columns + ("count",):
        table.add_column(col, justify="left" if col == "split" else "right")
    rows = [(f"val (best epoch {summary['best_epoch']})", summary["best_val"])]
    rows += [(f"test ({which})", m) for which, m in (summary.get("test") or {}).items() if m]
    for label, m in rows:
        table.add_row(label, *(f"{m[c]:.4f}" for c in columns), str(m["count"]))
    return table


def comparison_table(runs: list[Followed]) -> Table:
    """One row per run of a grid: its state and headline numbers."""
    table = Table(title="grid: comparison")
    for col in ("run", "state", "epochs", "best epoch", "val acc", "test acc (best)",
                "test acc (last)", "requeues", "restarts", "wall s"):
        table.add_column(col, justify="left" if col in ("run", "state") else "right")
    for run in runs:
        s = read_summary(run.run_dir)
        if s is None:
            table.add_row(run.name, run.state, *["-"] * 8)
            continue
        test = s.get("test") or {}
        acc = lambda which: f"{test[which]['accuracy']:.4f}" if test.get(which) else "-"
        table.add_row(run.name, run.state, str(s["epochs"]), str(s["best_epoch"]),
                      f"{s['best_val']['accuracy']:.4f}", acc("best"), acc("last"),
                      str(s.get("requeues", 0)), str(s.get("restarts", 0)),
                      f"{s['wall_time_s']:.0f}")
    return table


def show_results(runs: list[Followed], tables: bool = True) -> None:
    """The final table(s); a run that did not finish is named with its logs."""
    for run in runs:
        if run_state(run.run_dir) != "done":
            console.print(f"{run.name}: job {run.job.job_id} ended ({run.state}) without finishing "
                          f"the run; see {run.job.paths.stdout} and {run.job.paths.stderr}",
                          soft_wrap=True)
    if not tables:
        return
    width = None if is_interactive() else 200     # logs and pipes: no wrapping inside cells
    if len(runs) > 1:
        console.print(comparison_table(runs), width=width)
    elif (summary := read_summary(runs[0].run_dir)) is not None:
        console.print(metrics_table(summary), width=width)
