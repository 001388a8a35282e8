"""The node agent's pieces: rendezvous port derivation, worker counts, signalling real workers."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fer_dist.config import LaunchConfig
from fer_dist.errors import UserError
from fer_dist.launch import elastic
from fer_dist.launch.elastic import NodePlace, rendezvous_port, workers_per_node

SBATCH = Path(__file__).resolve().parent.parent / "slurm" / "train.sbatch"


def test_port_is_20000_plus_job_id_mod_40000():
    assert rendezvous_port("1") == 20001
    assert rendezvous_port("123456") == 20000 + 123456 % 40000 == 23456
    assert rendezvous_port("40000") == 20000
    # array tasks running side by side have consecutive job ids: distinct ports
    assert len({rendezvous_port(str(j)) for j in range(1000, 1100)}) == 100


def test_port_matches_the_shell_formula_of_the_sbatch_docs():
    for job in ("7", "39999", "987654321"):
        shell = subprocess.run(["bash", "-c", f"echo $((20000 + {job} % 40000))"],
                               capture_output=True, text=True, check=True).stdout
        assert rendezvous_port(job) == int(shell)
    assert "20000 + job id mod 40000" in SBATCH.read_text()


def test_non_numeric_job_ids_hash_into_the_range_stably():
    ports = {rendezvous_port(f"DEBUG_{i}") for i in range(50)}
    assert all(20000 <= p < 60000 for p in ports) and len(ports) > 40
    assert rendezvous_port("DEBUG_1") == rendezvous_port("DEBUG_1")


def test_workers_per_node_follows_gpus_else_cpu_workers():
    assert workers_per_node(LaunchConfig(workers_per_node=3)) == 3
    assert workers_per_node(LaunchConfig(gpus_per_node=4, workers_per_node=1)) == 4


def test_train_args_run_the_trainer_module():
    args = elastic.train_args(Path("/r/config.yaml"), Path("/r"), ["optim.lr=0.1"])
    assert args == ["-u", "-m", "fer_dist", "train", "--config", "/r/config.yaml", "--out", "/r",
                    "--set", "optim.lr=0.1"]


def test_from_slurm_outside_a_job_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(UserError, match="SLURM_JOB_ID.*runs inside a Slurm job step"):
        NodePlace.from_slurm()


WORKER = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    out = Path(sys.argv[1])
    signal.signal(signal.SIGUSR2, lambda *_: (out.write_text("saved"), sys.exit(0)))
    Path(sys.argv[2]).write_text("ready")
    time.sleep(60)
""")


def test_forwarded_signal_reaches_every_worker_and_they_exit(tmp_path):
    procs = []
    for i in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"saved{i}"),
                                       str(tmp_path / f"ready{i}")]))
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        assert sorted(elastic.worker_pids()) == sorted(p.pid for p in procs)
        assert elastic.wait_for_workers(timeout_s=0.3) is False       # still running
        assert sorted(elastic.forward_signal("SIGUSR2")) == sorted(p.pid for p in procs)
        assert elastic.wait_for_workers(timeout_s=30) is True
        assert [(tmp_path / f"saved{i}").read_text() for i in range(2)] == ["saved", "saved"]
        assert [p.wait(timeout=5) for p in procs] == [0, 0]
        assert elastic.worker_pids() == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
