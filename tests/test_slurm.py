"""`fer-dist submit` against a real Slurm: the local cluster of slurm/local-cluster (2 slurmd on this
host), started and stopped by this module. Jobs run real torchrun agents and gloo workers on CPU.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import (REPO, LocalSlurm, slurm_unavailable, submit, submit_argv,
                           write_config)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = LocalSlurm(nodes=2)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm")



@pytest.fixture(scope="module")
def baseline(slurm, work, shards_small):
    """A 2-worker, 3-epoch run through submitit on Slurm, left for the other tests to compare with."""
    config = write_config(work, shards_small, "base")
    out = submit(config, "--set", "train.epochs=3", "--wait", "--timeout-min", "8",
                 env=slurm.client_env())
    return out, work / "runs" / "base"


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def job_id(run: Path) -> str:
    return json.loads((run / "job.json").read_text())["job_id"]


def assert_same_training(run: Path, reference: Path) -> None:
    """Every epoch's numbers and the test metrics equal the reference run's (CPU: within 1e-6)."""
    keys = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1_macro")
    got, want = records(run), records(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want):
        assert {k: g[k] for k in keys} == pytest.approx({k: w[k] for k in keys}, rel=1e-6, abs=1e-6)
        assert g["val_confusion"] == w["val_confusion"]
    for which in ("best", "last"):
        g, w = summary(run)["test"][which], summary(reference)["test"][which]
        assert g["confusion"] == w["confusion"]
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-6)


def test_two_worker_training_completes(slurm, baseline):
    out, run = baseline
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jid = job_id(run)
    assert f"submitted job {jid} on slurm, 1 node(s) x 2 worker(s): base" in out.stdout
    # --wait follows the states (COMPLETING may come between) and shows the rank-0 lines
    assert out.stdout.index(f"job {jid} (base): RUNNING -> ") < out.stdout.index("-> COMPLETED")
    assert "epoch 3/3" in out.stdout
    assert "base: final metrics (requeues 0, restarts 0)" in out.stdout
    assert slurm.run("squeue", "-h", "-t", "all", "-j", jid, "-o", "%T").split() == ["COMPLETED"]
    # what the training issue specifies for a run directory
    for name in ("config.yaml", "metrics.jsonl", "learning_curves.csv", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert not (run / "preempted.json").exists()
    assert [r["epoch"] for r in records(run)] == [1, 2, 3]
    s = summary(run)
    assert s["world_size"] == 2 and s["global_batch"] == 32
    assert s["requeues"] == 0 and s["restarts"] == 0
    assert [a["slurm_job_id"] for a in s["attempts"]] == [jid]
    assert s["test"]["last"]["count"] == s["split_counts"]["test"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert Path(config["data"]["shards"]).is_absolute()


def test_two_nodes_form_one_process_group(slurm, work, shards_small, baseline):
    config = write_config(work, shards_small, "twonodes")
    out = submit(config, "--set", "train.epochs=3", "--set", "launch.nodes=2",
                 "--set", "launch.workers_per_node=1", "--set", "launch.cpus_per_task=1",
                 "--wait", "--timeout-min", "8", env=slurm.client_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = work / "runs" / "twonodes"
    assert "2 node(s) x 1 worker(s)" in out.stdout
    assert summary(run)["world_size"] == 2
    jid = job_id(run)
    logs = [(work / "runs" / "jobs" / f"{jid}_{task}_log.out").read_text() for task in (0, 1)]
    assert "agent: node 1/2" in logs[0] and "agent: node 2/2" in logs[1]
    nodes = slurm.run("squeue", "-h", "-t", "all", "-j", jid, "-o", "%N").strip()
    assert len(slurm.run("scontrol", "show", "hostnames", nodes).split()) == 2
    # one process group over both nodes: the very numbers of two workers on one node
    assert_same_training(run, baseline[1])


def test_time_limit_requeues_and_finishes(slurm, work, shards_small, baseline):
    # Enough epochs for about a minute of training on this machine (measured by the baseline):
    # more than the first attempt gets, since Slurm signals a 1-minute job 20-50 s after it starts.
    seconds = sum(r["time_s"] for r in records(baseline[1])) / 3
    epochs = min(max(math.ceil(60 / seconds), 4), 300)
    config = write_config(work, shards_small, "requeue")
    out = submit(config, "--set", f"train.epochs={epochs}", "--set", "launch.time_min=1",
                 "--set", "launch.signal_delay_s=10", "--set", "launch.max_requeues=8",
                 "--wait", "--timeout-min", "12", env=slurm.client_env(), timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = work / "runs" / "requeue"
    assert [r["epoch"] for r in records(run)] == list(range(1, epochs + 1))
    s = summary(run)
    log = (work / "runs" / "jobs" / f"{job_id(run)}_0_log.out").read_text()
    # A warning that lands while the last epoch finishes still requeues the job once more; that
    # start finds the run done and trains nothing (no agent), so it is not a requeue of training.
    starts = log.count("Starting with JobEnvironment")
    trained = log.count("agent: node 1/1 of job")
    assert starts - trained in (0, 1)
    assert s["requeues"] >= 1 and s["requeues"] == trained - 1
    assert s["epochs"] == epochs and s["resumes"] == s["requeues"]
    saves = log.count("checkpoint: 2 worker(s) signalled with SIGUSR2; all exited")
    assert saves - s["requeues"] in (0, starts - trained)
    assert out.stdout.count("-> RUNNING") >= 2               # --wait saw the job start again
    assert not (run / "preempted.json").exists()


def test_killed_worker_is_restarted_and_resumes(slurm, work, shards_small, baseline):
    config = write_config(work, shards_small, "killed")
    run = work / "runs" / "killed"
    proc = subprocess.Popen(
        submit_argv(config, "--set", "train.epochs=3", "--set", "launch.max_restarts=1",
                    "--wait", "--timeout-min", "8"),
        env=slurm.client_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        victim = wait_for_worker(run, rank=1, deadline_s=300)
        os.kill(victim, signal.SIGKILL)                      # mid-training, after epoch 1's checkpoint
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output[-4000:]
    s = summary(run)
    assert s["restarts"] == 1 and s["requeues"] == 0
    restarted = [a for a in s["attempts"] if a["torchelastic_restart_count"] == 1]
    assert restarted and restarted[0]["resumed"] and restarted[0]["epoch"] >= 2
    assert_same_training(run, baseline[1])


def wait_for_worker(run: Path, rank: int, deadline_s: float) -> int:
    """The PID of worker `rank` of the run's job, once epoch 1's checkpoint is on disk."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if (run / "checkpoints" / "last.pt").is_file() and (run / "job.json").is_file():
            pid = find_worker(f"fer_dist-{job_id(run)}", rank)
            if pid:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} with a checkpoint within {deadline_s} s")


def find_worker(run_id: str, rank: int) -> int | None:
    """The process whose environment says TORCHELASTIC_RUN_ID=run_id and RANK=rank."""
    want = {f"TORCHELASTIC_RUN_ID={run_id}", f"RANK={rank}"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
        if want <= environ:
            return int(entry.name)
    return None


def test_job_array_runs_every_entry(slurm, work, shards_small):
    config = write_config(work, shards_small, "arr")
    grid = work / "grid.yaml"
    grid.write_text("grid:\n  train.seed: [0, 1]\n")
    out = submit(config, "--grid", str(grid), "--set", "train.epochs=1",
                 "--set", "launch.workers_per_node=1", "--set", "launch.cpus_per_task=1",
                 "--wait", "--timeout-min", "8", env=slurm.client_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = [work / "runs" / name for name in ("arr-seed0", "arr-seed1")]
    ids = [job_id(run) for run in runs]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"]               # one job array, two tasks
    for run, seed in zip(runs, (0, 1)):
        assert summary(run)["epochs"] == 1
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == seed
    assert "grid: comparison" in out.stdout
    assert "arr-seed0" in out.stdout and "arr-seed1" in out.stdout
    assert records(runs[0])[0]["train_loss"] != records(runs[1])[0]["train_loss"]


@pytest.mark.parametrize("sets, path, message", [
    ((), "empty", "--cluster slurm needs sbatch, srun, sinfo on PATH"),
    (("data.shards=/no/such/shards",), None, "data.shards = '/no/such/shards' has no manifest.json"),
    (("launch.nodes=3",), None, "launch.nodes = 3, but the default partition has only 2 node(s)"),
    (("launch.gpus=1",), None, "unknown config key launch.gpus"),
    (("launch.sbatch_extra={nodelist: nosuchnode}",), None,
     "sbatch refused the job: sbatch: error: Batch job submission failed: Invalid node name"),
])
def test_bad_input_is_refused_before_submitting(slurm, work, shards_small, sets, path,
                                                  message):
    config = write_config(work, shards_small, "bad")
    env = slurm.client_env()
    if path == "empty":                                      # no Slurm tools on PATH
        empty = work / "empty-bin"
        empty.mkdir(exist_ok=True)
        env["PATH"] = str(empty)
    before = slurm.job_ids()
    args = [arg for item in sets for arg in ("--set", item)]
    out = submit(config, *args, env=env)
    assert out.returncode == 2
    assert message in out.stderr.replace("\n", " ")
    assert "Traceback" not in out.stderr
    assert slurm.job_ids() == before
    assert not (work / "runs" / "bad").exists()


def test_plain_sbatch_script_trains_on_two_nodes(slurm, work, shards_small):
    config = write_config(work, shards_small, "sbatch")
    run = work / "runs" / "sbatch"
    script = REPO / "slurm" / "train.sbatch"
    env = slurm.client_env(FER_DIST_PYTHON=sys.executable)
    out = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=1",
                          f"--output={work}/sbatch-%j.out", str(script), str(config), str(run),
                          "--set", "launch.workers_per_node=1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    jid = out.stdout.strip()
    assert slurm.wait_job(jid, timeout=600) == "COMPLETED"
    log = Path(f"{work}/sbatch-{jid}.out").read_text()
    assert "agent: node 1/2" in log and "agent: node 2/2" in log
    assert summary(run)["world_size"] == 2 and [r["epoch"] for r in records(run)] == [1, 2]
