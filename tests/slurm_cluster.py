"""Helpers of the launch tests: a real local Slurm (slurm/local-cluster), tiny configs, the CLI.

Imported as a plain module by tests/test_slurm.py and tests/test_launch_*.py (pytest puts tests/
on sys.path); the fixtures live in those files.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "slurm" / "local-cluster"
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scontrol")


def slurm_unavailable() -> str | None:
    """Why the local Slurm cannot start here (None: it can), in words for pytest.skip."""
    if os.geteuid() != 0:
        return "the local Slurm runs its daemons as root; these tests need root (CI runs them)"
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    missing = [b for b in SLURM_BINARIES if shutil.which(b, path=path) is None]
    if missing and shutil.which("apt-get") is None:
        return (f"Slurm is not installed ({', '.join(missing)} missing) and there is no apt-get "
                "to install it (slurm/local-cluster/install.sh)")
    return None


def free_port(span: int = 1) -> int:
    """A TCP port p such that p .. p+span-1 are free now."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span < 65000 and all(_port_free(port + i) for i in range(1, span)):
            return port


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class LocalSlurm:
    """slurm/local-cluster/start.sh and stop.sh on a folder of their own, with free ports."""

    def __init__(self, nodes: int = 2):
        self.nodes = nodes
        # munged refuses a socket below a folder others cannot search: not pytest's tmp_path
        self.dir = Path(tempfile.mkdtemp(prefix="fer-slurm-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_LOCAL_CTLD_PORT=str(free_port()),
                        SLURM_LOCAL_SLURMD_PORT=str(free_port(nodes)), SLURM_LOCAL_CRED_EXPIRE="5")

    def start(self, timeout: float = 600) -> None:
        out = subprocess.run(["bash", str(SCRIPTS / "start.sh"), "--nodes", str(self.nodes),
                              str(self.dir)], env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"start.sh failed:\n{out.stderr[-4000:]}")
        assert out.stdout.strip() == f"export SLURM_CONF={self.conf}", out.stdout

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(self.dir), "--purge"], env=self.env,
                       capture_output=True, text=True, timeout=120)

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of `fer-dist submit` and of the jobs it starts (sbatch passes it on)."""
        return cli_env(SLURM_CONF=str(self.conf), **extra)

    def run(self, *args: str, timeout: float = 120) -> str:
        """A Slurm client command's stdout (it must succeed)."""
        out = subprocess.run(list(args), env=self.client_env(), capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"{args}: {out.stderr}"
        return out.stdout

    def wait_job(self, job_id: str, timeout: float) -> str:
        """Poll squeue until the job ends; its final state (AssertionError past the timeout)."""
        deadline, state = time.monotonic() + timeout, "unknown"
        while time.monotonic() < deadline:
            state = self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()
            if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return state
            time.sleep(1)
        raise AssertionError(f"job {job_id} still {state} after {timeout} s")

    def job_ids(self) -> set[str]:
        """Every job slurmctld knows, finished ones included."""
        return set(self.run("squeue", "-h", "-t", "all", "-o", "%i").split())


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `fer-dist` in a subprocess, and for the jobs it starts."""
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                **extra)


TINY = {"data": {"image_size": 32, "loader_workers": 0},
        "optim": {"name": "sgd", "lr": 0.2, "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 16, "threads": 1},
        "launch": {"workers_per_node": 2, "cpus_per_task": 2, "time_min": 5,
                   "signal_delay_s": 10, "max_requeues": 6}}


def write_config(folder: Path, shards: Path, name: str) -> Path:
    """A tiny training config (2 CPU workers, 32 px, 2 epochs) writing runs under folder/runs."""
    cfg = {"name": name, "out_dir": str(folder / "runs"), **TINY,
           "data": {**TINY["data"], "shards": str(shards)}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def submit_argv(config: Path, *args: str) -> list[str]:
    """`fer-dist submit --config CONFIG ARGS...` as a user types it."""
    return [sys.executable, "-m", "fer_dist", "submit", "--config", str(config), *args]


def submit(config: Path, *args: str, env: dict[str, str],
           timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `fer-dist submit` in a process of its own, to the end."""
    return subprocess.run(submit_argv(config, *args), env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
