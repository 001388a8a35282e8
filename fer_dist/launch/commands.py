"""`fer-dist submit` (a run or a grid, to Slurm or here) and `fer-dist agent` (sbatch's node task).

Everything a user can get wrong is checked before the first file is written or job submitted:
the config (load_config), the grid file, the cluster's tools and partition size, the run
directories. Then each run directory gets its resolved config.yaml, the jobs are submitted (a
grid as one job array), and `--wait` follows them to the end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from fer_dist.config import Config, LaunchConfig, add_config_arguments, dump_yaml, load_config
from fer_dist import atomic
from fer_dist.console import console
from fer_dist.errors import UserError
from fer_dist.launch import elastic, follow
from fer_dist.launch.grid import format_value, load_grid, run_names
from fer_dist.launch.slurm import (TrainingJob, check_cluster, job_record, make_executor,
                                   preempt_signal, run_state, submit_jobs)

EPILOG = """\
examples:
  fer-dist submit --config configs/demo.yaml --set launch.workers_per_node=2 --wait
  fer-dist submit --config configs/demo.yaml --cluster local --wait
  fer-dist submit --config configs/demo.yaml --grid grid.yaml --wait   (format: slurm/README.md)

Resources come from the config's launch: section (nodes, workers_per_node, gpus_per_node, time_min,
partition, ...). Resubmitting a run whose directory holds checkpoints/last.pt resumes it.
A local Slurm to try this on: see slurm/README.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit training to Slurm (or run it here) through submitit",
                       description="Submit a training run, or a grid of runs as one job array: "
                                   "one task per node, torchrun workers on each.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, example="launch.nodes=2")
    p.add_argument("--grid", help="grid YAML: one run per entry, submitted as one job array")
    p.add_argument("--cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="slurm (default), local (submitit's local executor, this machine) or "
                        "debug (in this process)")
    p.add_argument("--wait", action="store_true",
                   help="follow the job(s): states, rank-0 progress, final metrics")
    p.add_argument("--timeout-min", type=float, metavar="MIN",
                   help="with --wait: stop following after MIN minutes (default: the time limit "
                        "times the attempts allowed, plus 10)")
    p.set_defaults(func=submit_command)

    a = sub.add_parser("agent", help="run one node's torchrun agent (the task of slurm/train.sbatch)",
                       description="Inside an srun task: start this node's training workers with a "
                                   "c10d rendezvous on the job's first node.")
    add_config_arguments(a)   # the --set overrides are passed on to the workers
    a.add_argument("--out", help="run directory (default: <out_dir>/<name> from the config)")
    a.set_defaults(func=agent_command)


@dataclass
class PlannedRun:
    """A run checked and ready to submit: its resolved config and where it will live."""
    cfg: Config
    run_dir: Path
    config_text: str
    resume: bool


def submit_command(args: argparse.Namespace) -> int:
    runs = plan_runs(args.config, args.overrides, args.grid)
    launch = runs[0].cfg.launch
    check_cluster(launch, args.cluster)
    created = [run.run_dir for run in runs if not run.run_dir.exists()]
    for run in runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run.run_dir / "config.yaml", run.config_text)
    executor = make_executor(launch, args.cluster, Path(runs[0].cfg.out_dir) / "jobs")
    try:
        jobs = submit_jobs(executor, [TrainingJob(str(r.run_dir), r.cfg.launch, preempt_signal(r.cfg))
                                      for r in runs])
    except UserError:
        for run_dir in created:               # nothing left behind for a job that never was
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    followed = [follow.Followed(r.cfg.name, r.run_dir, job, args.cluster)
                for r, job in zip(runs, jobs)]
    announce(followed, runs, launch, args.cluster)
    if args.cluster == "debug":                  # the debug executor runs the job right here
        for f in followed:
            f.state = "COMPLETED" if f.job.result() == "done" else "FAILED"
        follow.show_results(followed, tables=len(followed) > 1)   # the trainer printed its own
        return 0 if all(run_state(f.run_dir) == "done" for f in followed) else 1
    if not args.wait:
        return 0
    minutes = args.timeout_min or launch.time_min * (launch.max_requeues + 1) + 10
    done = follow.follow(followed, timeout_s=minutes * 60)
    follow.show_results(followed)
    return 0 if done else 1


def plan_runs(config: str, overrides: list[str], grid: str | None) -> list[PlannedRun]:
    """Load and check every run's config (one per grid entry) and its run directory."""
    if grid is None:
        return [plan_run(load_config(config, overrides))]
    entries = load_grid(grid)
    names = run_names(load_config(config, overrides).name, entries, grid)
    cfgs = []
    for i, (entry, name) in enumerate(zip(entries, names)):
        items = [*overrides, *entry.overrides(), f"name={format_value(name)}"]
        try:
            cfgs.append(load_config(config, items))
        except UserError as err:
            raise UserError(f"{grid}, entry {i + 1} ({' '.join(entry.overrides())}): {err}") from None
    for cfg in cfgs[1:]:
        if cfg.launch != cfgs[0].launch:
            raise UserError(f"{grid}: {cfg.name} changes the launch: section, but a job array "
                            f"runs every entry with the same resources: move launch.* keys out "
                            f"of the grid")
    return [plan_run(cfg) for cfg in cfgs]


def plan_run(cfg: Config) -> PlannedRun:
    """Make the config's paths absolute (jobs may start elsewhere) and check the run directory."""
    cfg.data.shards = str(Path(cfg.data.shards).resolve())
    if cfg.model.weights not in ("none", "imagenet"):
        cfg.model.weights = str(Path(cfg.model.weights).resolve())
    cfg.out_dir = str(Path(cfg.out_dir).resolve())
    run_dir = cfg.run_dir()
    text = dump_yaml(cfg)
    state = run_state(run_dir)
    if state == "done":
        raise UserError(f"{run_dir} holds a finished run (summary.json): choose another name "
                        f"(--set name=...) or remove that folder")
    old = run_dir / "config.yaml"
    if state != "new" and old.is_file() and old.read_text() != text:
        raise UserError(f"{run_dir} holds a started run with a different config; resubmitting "
                        f"resumes only the same config: choose another name (--set name=...)")
    return PlannedRun(cfg, run_dir, text, resume=state != "new")


def announce(followed: list[follow.Followed], runs: list[PlannedRun], launch: LaunchConfig,
             cluster: str) -> None:
    """Print the job id, run directory and logs of each run; keep them in RUN_DIR/job.json."""
    shape = f"{launch.nodes} node(s) x {elastic.workers_per_node(launch)} worker(s)"
    for f, run in zip(followed, runs):
        record = job_record(f.job, cluster, f.run_dir)
        atomic.write_text(f.run_dir / "job.json", json.dumps(record, indent=2) + "\n")
        verb = "resubmitted (resumes from checkpoints/last.pt)" if run.resume else "submitted"
        console.print(f"{verb} job {f.job.job_id} on {cluster}, {shape}: {f.name}", soft_wrap=True)
        console.print(f"  run directory: {f.run_dir}", soft_wrap=True)
        if cluster != "debug":
            console.print(f"  logs: {record['stdout']}  {record['stderr']}", soft_wrap=True)


def agent_command(args: argparse.Namespace) -> int:
    """One node's agent in a plain sbatch job; on the preemption signal, the workers checkpoint."""
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.out).resolve() if args.out else cfg.run_dir().resolve()
    place = elastic.NodePlace.from_slurm()
    sig = preempt_signal(cfg)
    if sig:   # Slurm signals the workers as well; forwarding again is harmless and makes sure
        signal.signal(signal.Signals[sig if sig.startswith("SIG") else "SIG" + sig],
                      lambda *_: elastic.forward_signal(sig))
    elastic.run_agent(place, cfg.launch,
                      elastic.train_args(Path(args.config).resolve(), run_dir, args.overrides),
                      log_dir=run_dir / "elastic")
    return 0
