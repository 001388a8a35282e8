"""The per-node torchrun agent: one elastic agent per node spawns that node's training workers.

Slurm (or submitit's local executor) starts one task per node; each task calls `run_agent`, which
runs torch's elastic agent in its own process. The agents of a job meet through a c10d rendezvous
hosted by the agent on the job's first node, at a port derived from the job id, and give their
workers RANK/WORLD_SIZE/MASTER_ADDR; a failed worker makes every agent restart its workers (up to
`launch.max_restarts` times), and the restarted workers resume from the run's last checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from fer_dist.config import LaunchConfig
from fer_dist.errors import UserError

PORT_LOW, PORT_SPAN = 20000, 40000       # rendezvous ports live in [20000, 60000)
RDZV_TIMEOUT_S = 300                     # how long the agents wait for each other


@dataclass(frozen=True)
class NodePlace:
    """Where this agent stands in its job: which node of how many, and who hosts the rendezvous."""
    job_id: str
    node_rank: int
    nodes: int
    head: str                            # host name of the job's first node

    @classmethod
    def from_submitit(cls) -> NodePlace:
        """Inside a submitit job (Slurm, local or debug executor)."""
        import submitit
        env = submitit.JobEnvironment()
        return cls(job_id=env.raw_job_id, node_rank=env.node, nodes=env.num_nodes,
                   head=env.hostnames[0])

    @classmethod
    def from_slurm(cls) -> NodePlace:
        """Inside an srun task of a plain sbatch job (slurm/train.sbatch)."""
        try:
            job_id, nodelist = os.environ["SLURM_JOB_ID"], os.environ["SLURM_JOB_NODELIST"]
        except KeyError as missing:
            raise UserError(f"{missing} is not set: `fer-dist agent` runs inside a Slurm job step "
                            "(srun); outside Slurm use `fer-dist submit --cluster local`") from None
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                               text=True, timeout=30, check=True).stdout.split()
        return cls(job_id=job_id, node_rank=int(os.environ.get("SLURM_NODEID", "0")),
                   nodes=int(os.environ.get("SLURM_JOB_NUM_NODES", "1")), head=hosts[0])


def rendezvous_port(job_id: str) -> int:
    """A port that every node of a job derives alike: 20000 + job number mod 40000.

    slurm/train.sbatch computes the same number in bash. Consecutive job ids (array tasks running
    side by side) get distinct ports; a non-numeric id (submitit's debug executor) is hashed.
    """
    number = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return PORT_LOW + number % PORT_SPAN


def workers_per_node(launch: LaunchConfig) -> int:
    """One worker per GPU when the job asks for GPUs, else launch.workers_per_node CPU workers."""
    return launch.gpus_per_node if launch.gpus_per_node > 0 else launch.workers_per_node


def train_args(config: Path, run_dir: Path, overrides: list[str] = ()) -> list[str]:
    """The worker command after the python executable: `-m fer_dist train --config ... --out ...`."""
    args = ["-u", "-m", "fer_dist", "train", "--config", str(config), "--out", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    return args


def run_agent(place: NodePlace, launch: LaunchConfig, worker_args: list[str], log_dir: Path) -> None:
    """Run this node's elastic agent until its workers end (ChildFailedError once restarts run out)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig as AgentConfig, elastic_launch

    port = launch.rdzv_port or rendezvous_port(place.job_id)
    log_dir.mkdir(parents=True, exist_ok=True)
    config = AgentConfig(
        min_nodes=place.nodes, max_nodes=place.nodes, nproc_per_node=workers_per_node(launch),
        run_id=f"fer_dist-{place.job_id}", rdzv_backend="c10d",
        rdzv_endpoint=f"{place.head}:{port}",
        # the first node hosts the store; said explicitly, since several "nodes" may share a host
        rdzv_configs={"timeout": RDZV_TIMEOUT_S, "is_host": place.node_rank == 0},
        max_restarts=launch.max_restarts, monitor_interval=0.5,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir)))
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # the trainer sets its own thread count
    # By default the workers of every restart share one store with those of the first start, so a
    # restarted rank may read a dead rank's address left there and fail to connect (seen with
    # gloo); with sharing off, rank 0 of each start hosts a fresh store.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    print(f"agent: node {place.node_rank + 1}/{place.nodes} of job {place.job_id}, "
          f"{config.nproc_per_node} worker(s), rendezvous c10d at {config.rdzv_endpoint}, "
          f"max_restarts={launch.max_restarts}", flush=True)
    elastic_launch(config, sys.executable)(*worker_args)


# ----------------------------------------------------------------------------- the workers

def worker_pids() -> list[int]:
    """Live child processes of this process: the agent's workers (zombies excluded)."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]   # the command name may hold spaces
        if int(ppid) == me and state != "Z":
            pids.append(int(entry.name))
    return pids


def forward_signal(name: str) -> list[int]:
    """Send signal `name` (e.g. SIGUSR2) to every worker; returns their PIDs."""
    sig = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    pids = worker_pids()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def wait_for_workers(timeout_s: float, poll_s: float = 0.2) -> bool:
    """Wait until no worker is left (True) or the timeout passes (False)."""
    deadline = time.monotonic() + timeout_s
    while worker_pids():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True
