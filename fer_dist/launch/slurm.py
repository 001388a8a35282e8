"""The whole Slurm story of a run: the executor built from the config, and the object it submits.

`TrainingJob` is small and picklable. submitit runs it once per node: `__call__` runs the node's
torchrun agent (launch/elastic.py). When Slurm warns of the time limit or of preemption it sends
USR2 to every process of the job step; the workers turn it into a checkpoint at the next step
boundary (launch/signals.py), while submitit, in the first node's task, calls `checkpoint()`, which
makes sure the workers got the signal, waits until they have saved and exited, and hands back a
resubmission of the same object. submitit then requeues the job, and the requeued job resumes from
the run directory's checkpoints/last.pt.
"""
from __future__ import annotations

import math
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import submitit

from fer_dist.config import Config, LaunchConfig
from fer_dist.errors import UserError
from fer_dist.launch import elastic

CLUSTERS = ("slurm", "local", "debug")
SLURM_CHECK_PERIOD_S = 30     # slurmctld looks at time limits (and sends --signal) this often
MIN_TRAIN_S = 15              # the least time an attempt must have before its warning signal


def run_state(run_dir: Path) -> str:
    """"done" (summary.json, no preempted.json), "preempted", "started" (a checkpoint) or "new"."""
    if (run_dir / "preempted.json").is_file():
        return "preempted"
    if (run_dir / "summary.json").is_file():
        return "done"
    return "started" if (run_dir / "checkpoints" / "last.pt").is_file() else "new"


@dataclass
class TrainingJob:
    """What every node of the job runs: the node's agent, training the run in `run_dir`."""
    run_dir: str
    launch: LaunchConfig
    preempt_signal: str | None = "SIGUSR2"   # the workers' checkpoint signal; None: they have none

    def __call__(self) -> str:
        run_dir = Path(self.run_dir)
        if run_state(run_dir) == "done":         # e.g. a requeue raced with the last epoch
            return "done"
        elastic.run_agent(elastic.NodePlace.from_submitit(), self.launch,
                          elastic.train_args(run_dir / "config.yaml", run_dir),
                          log_dir=run_dir / "elastic")
        return run_state(run_dir)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on USR2 (first node only): let the workers save, then requeue."""
        # Slurm signals the workers too; the local executor signals only this process.
        pids = elastic.forward_signal(self.preempt_signal) if self.preempt_signal else []
        saved = elastic.wait_for_workers(timeout_s=max(self.launch.signal_delay_s - 3, 5))
        print(f"checkpoint: {len(pids)} worker(s) signalled with {self.preempt_signal}; "
              f"{'all exited' if saved else 'some still running'}; run state "
              f"{run_state(Path(self.run_dir))}; requeueing", flush=True)
        # The requeue that follows sends SIGTERM to this task while it exits anyway; the
        # elastic agent would turn that into a second, confusing traceback in the log.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return submitit.helpers.DelayedSubmission(self)


def make_executor(launch: LaunchConfig, cluster: str, folder: Path) -> submitit.Executor:
    """A submitit executor with the config's resources: one task per node, logs in `folder`."""
    if cluster == "slurm":
        ex = submitit.SlurmExecutor(folder, max_num_timeout=launch.max_requeues)
        optional = {"partition": launch.partition, "account": launch.account, "qos": launch.qos,
                    "constraint": launch.constraint,
                    "mem": f"{math.ceil(launch.mem_gb * 1024)}M" if launch.mem_gb else None,
                    "gpus_per_node": launch.gpus_per_node or None,
                    "setup": list(launch.setup) or None,
                    "additional_parameters": dict(launch.sbatch_extra) or None}
        ex.update_parameters(
            job_name=launch.job_name, time=launch.time_min, nodes=launch.nodes, ntasks_per_node=1,
            cpus_per_task=launch.cpus_per_task, signal_delay_s=launch.signal_delay_s,
            # srun of Slurm 22.05 does not inherit --cpus-per-task from sbatch: say it again
            srun_args=["--cpus-per-task", str(launch.cpus_per_task)],
            **{k: v for k, v in optional.items() if v is not None})
        return ex
    if cluster == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=launch.max_requeues)
        ex.update_parameters(timeout_min=launch.time_min, tasks_per_node=1,
                             gpus_per_node=launch.gpus_per_node,
                             signal_delay_s=launch.signal_delay_s, setup=list(launch.setup))
        return ex
    return submitit.DebugExecutor(folder)


def submit_jobs(executor: submitit.Executor, jobs: list[TrainingJob]) -> list[submitit.Job]:
    """Submit one job, or several as one job array; a refusal by sbatch is a UserError."""
    try:
        if len(jobs) == 1:
            return [executor.submit(jobs[0])]
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        return submitted
    except submitit.core.utils.FailedJobError as err:
        message = " ".join(str(err).split()) or "no message"
        raise UserError(f"sbatch refused the job: {message} (check the launch: section: partition, "
                        "account, qos, constraint, sbatch_extra)") from None


# ----------------------------------------------------------------------------- before submitting

def check_cluster(launch: LaunchConfig, cluster: str) -> None:
    """Refuse, before anything is written or submitted, what the chosen cluster cannot run."""
    if cluster not in CLUSTERS:
        raise UserError(f"--cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
    if cluster != "debug":
        check_signal_delay(launch, cluster)
    if cluster != "slurm":
        if launch.nodes > 1:
            raise UserError(f"launch.nodes = {launch.nodes}, but --cluster {cluster} runs on this "
                            "machine only: use --set launch.nodes=1, or --cluster slurm")
        return
    missing = [tool for tool in ("sbatch", "srun", "sinfo") if shutil.which(tool) is None]
    if missing:
        raise UserError(
            f"--cluster slurm needs {', '.join(missing)} on PATH, and none was found: install "
            "Slurm's client tools (Debian/Ubuntu: apt-get install slurm-client) and point "
            "SLURM_CONF at your cluster, or start a throw-away one on this machine with "
            "`sudo bash slurm/local-cluster/start.sh` (see slurm/README.md); or run here with "
            "--cluster local")
    available = partition_nodes(launch.partition)
    if launch.nodes > available:
        where = f"partition {launch.partition}" if launch.partition else "the default partition"
        raise UserError(f"launch.nodes = {launch.nodes}, but {where} has only {available} "
                        f"node(s): use --set launch.nodes={available} or another launch.partition")


def check_signal_delay(launch: LaunchConfig, cluster: str) -> None:
    """The warning signal must leave time to train: a job warned at its start only requeues."""
    early = SLURM_CHECK_PERIOD_S if cluster == "slurm" else 0
    left = launch.time_min * 60 - launch.signal_delay_s - early
    if left < MIN_TRAIN_S:
        raise UserError(
            f"launch.signal_delay_s = {launch.signal_delay_s} with launch.time_min = "
            f"{launch.time_min}: the checkpoint signal would come {max(left, 0)} s after each start"
            + (f" (Slurm sends it up to {early} s early)" if early else "")
            + f", too soon to train: lower launch.signal_delay_s or raise launch.time_min")


def partition_nodes(partition: str | None) -> int:
    """Node count of a partition (None: the default one) as sinfo reports it."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%D"], capture_output=True, text=True,
                             timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError("sinfo did not answer within 30 s: is slurmctld running? "
                        "(check SLURM_CONF and `sinfo`)") from None
    if out.returncode != 0:
        raise UserError(f"sinfo failed: {out.stderr.strip() or out.stdout.strip()} "
                        "(is SLURM_CONF set and slurmctld running?)")
    counts: dict[str, int] = {}
    default = None
    for line in out.stdout.splitlines():
        name, _, count = line.strip().partition("|")
        if name.endswith("*"):
            name = default = name[:-1]
        counts[name] = counts.get(name, 0) + int(count)
    wanted = partition or default
    if wanted not in counts:
        known = ", ".join(sorted(counts)) or "none"
        what = f"launch.partition = {partition!r} is not" if partition else "no default partition is"
        raise UserError(f"{what} a Slurm partition here (partitions: {known})")
    return counts[wanted]


def job_record(job: submitit.Job, cluster: str, run_dir: Path) -> dict:
    """What RUN_DIR/job.json keeps about a submission: id, cluster and log paths."""
    return {"job_id": str(job.job_id), "cluster": cluster, "run_dir": str(run_dir),
            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
            "submitit_folder": str(job.paths.folder)}


def preempt_signal(cfg: Config) -> str | None:
    """The signal that makes the workers checkpoint (the first of train.preempt_signals)."""
    return cfg.train.preempt_signals[0] if cfg.train.preempt_signals else None
