"""`fer-dist submit` without Slurm: bad input refused before anything is written, and the same
submitit path run on this machine (--cluster local), requeue on the time limit included."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from fer_dist.cli import main
from slurm_cluster import cli_env, submit, write_config



def refused(capsys, argv: list[str]) -> str:
    """Run the CLI in this process; it must exit 2 with one clear line and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("sets, cluster, message", [
    ([], "slurm", "--cluster slurm needs sbatch, srun, sinfo on PATH"),
    (["data.shards=/no/such/shards"], "local", "data.shards = '/no/such/shards' has no manifest.json"),
    (["launch.nodez=2"], "local", "unknown config key launch.nodez; did you mean launch.nodes?"),
    (["launch.nodes=2"], "local", "launch.nodes = 2, but --cluster local runs on this machine only"),
    (["launch.time_min=1", "launch.signal_delay_s=50"], "local",
     "the checkpoint signal would come 10 s after each start"),
    (["launch.time_min=1", "launch.signal_delay_s=40"], "slurm",
     "the checkpoint signal would come 0 s after each start (Slurm sends it up to 30 s early)"),
])
def test_bad_input_writes_nothing(tmp_path, shards_small, capsys, monkeypatch, sets, cluster,
                                  message):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))        # no Slurm here, whatever the host
    config = write_config(tmp_path, shards_small, "bad")
    argv = ["submit", "--config", str(config), "--cluster", cluster]
    err = refused(capsys, argv + [a for s in sets for a in ("--set", s)])
    assert message in err
    if cluster == "slurm" and not sets:
        assert "slurm/local-cluster/start.sh" in err and "--cluster local" in err
    assert not (tmp_path / "runs").exists()


def test_finished_or_different_run_directory_is_refused(tmp_path, shards_small, capsys):
    config = write_config(tmp_path, shards_small, "again")
    run = tmp_path / "runs" / "again"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.yaml").write_text("name: something else\n")
    err = refused(capsys, ["submit", "--config", str(config), "--cluster", "local"])
    assert f"{run} holds a started run with a different config" in err
    (run / "summary.json").write_text("{}")
    err = refused(capsys, ["submit", "--config", str(config), "--cluster", "local"])
    assert f"{run} holds a finished run" in err
    assert (run / "config.yaml").read_text() == "name: something else\n"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "summary.json"]


@pytest.mark.parametrize("grid, messages", [
    ({"grid": {"launch.time_min": [5, 10]}}, ["g-time_min10 changes the launch: section"]),
    ({"runs": [{"train.seed": 0}, {"optim.lrr": 1}]},
     ["entry 2 (optim.lrr=1):", "unknown config key optim.lrr; did you mean optim.lr?"]),
    ({"runs": [{"name": "x"}, {"name": "x"}]}, ["entries 1 and 2 would both be named 'x'"]),
])
def test_bad_grid_writes_nothing(tmp_path, shards_small, capsys, grid, messages):
    config = write_config(tmp_path, shards_small, "g")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    err = refused(capsys, ["submit", "--config", str(config), "--grid", str(path),
                           "--cluster", "local"])
    assert err.startswith(f"error: {path}")
    assert all(m in err for m in messages), err
    assert not (tmp_path / "runs").exists()


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_local_cluster_trains_and_requeues_at_the_time_limit(tmp_path, shards_small):
    # 1. the plain path: submitit's local executor, one agent, 2 workers (batch 4: 8 steps/epoch,
    #    so that the epoch-end checkpoint is a small part of an epoch's time)
    config = write_config(tmp_path, shards_small, "local")
    small = ("--set", "train.batch_size=4")
    out = submit(config, *small, "--cluster", "local", "--wait", "--timeout-min", "5",
                 env=cli_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "runs" / "local"
    assert "local: final metrics (requeues 0, restarts 0)" in out.stdout
    assert [r["epoch"] for r in records(run)] == [1, 2]
    job = json.loads((run / "job.json").read_text())
    assert job["cluster"] == "local" and Path(job["stdout"]).is_file()
    # 2. a 1-minute limit with the signal 35 s before it: the local executor sends USR2 to the
    #    agent only, 25 s after each start, and checkpoint() must pass it on to the workers.
    #    Training takes about 50 s at the speed measured above (twice the 25 s, since the load on
    #    a shared machine varies between the two runs), so the first attempt is cut short.
    seconds = sum(r["time_s"] for r in records(run)) / 2
    epochs = min(max(math.ceil(50 / seconds), 3), 300)
    out = submit(config, *small, "--cluster", "local", "--set", "name=local-timeout",
                 "--set", f"train.epochs={epochs}", "--set", "launch.time_min=1",
                 "--set", "launch.signal_delay_s=35", "--wait", "--timeout-min", "10",
                 env=cli_env(), timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "runs" / "local-timeout"
    assert [r["epoch"] for r in records(run)] == list(range(1, epochs + 1))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumes"] >= 1 and len(summary["attempts"]) == summary["resumes"] + 1
    log = Path(json.loads((run / "job.json").read_text())["stdout"]).read_text()
    saves = log.count("checkpoint: 2 worker(s) signalled with SIGUSR2; all exited")
    assert saves == summary["resumes"]
    assert not (run / "preempted.json").exists()
