"""End-to-end training: real torchrun workers (2 gloo ranks on CPU) on real webdataset shards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from fer_dist.cli import main
from fer_dist.optim.schedule import LRSchedule, scaled_lr

pytestmark = pytest.mark.slow

TINY = ["data.image_size=32", "train.batch_size=16", "train.threads=1", "optim.warmup_epochs=1",
        "data.loader_workers=0"]


def write_config(tmp: Path, shards: Path, name: str, *extra: str) -> Path:
    cfg = {"name": name, "out_dir": str(tmp / "runs"), "data": {"shards": str(shards)},
           "optim": {"name": "sgd", "lr": 0.2, "lars": True, "trust_coefficient": 0.02},
           "train": {"epochs": 2}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def torchrun(config: Path, out: Path, sets: list[str], nproc: int = 2, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "fer_dist", "train", "--config", str(config), "--out", str(out)]
    for s in TINY + sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_exact_evaluation_on_odd_validation_split(tmp_path, shards_odd_val):
    """2 ranks, 83 validation images: every epoch's confusion matrix counts each image once."""
    manifest = json.loads((shards_odd_val / "manifest.json").read_text())
    n_val, n_test = manifest["splits"]["val"]["count"], manifest["splits"]["test"]["count"]
    assert n_val % 2 == 1
    run = tmp_path / "run"
    finish(torchrun(write_config(tmp_path, shards_odd_val, "odd"), run, ["train.epochs=2"]))
    recs = records(run)
    assert [r["epoch"] for r in recs] == [1, 2]
    for r in recs:
        conf = torch.tensor(r["val_confusion"])
        assert conf.shape == (5, 5) and int(conf.sum()) == n_val
        assert r["val_acc"] == pytest.approx(float(conf.trace()) / n_val)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 32
    assert summary["test"]["last"]["count"] == n_test == sum(map(sum, summary["test"]["best"]["confusion"]))
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert (run / "learning_curves.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["data"]["image_size"] == 32 and resolved["optim"]["lars"] is True
    # the recorded metrics are scikit-learn's on the same predictions (rebuilt from the confusion)
    last = recs[-1]
    y_true, y_pred = [], []
    for i, row in enumerate(last["val_confusion"]):
        for j, n in enumerate(row):
            y_true += [i] * n
            y_pred += [j] * n
    assert last["val_acc"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        assert last[f"val_precision_{avg}"] == pytest.approx(p)
        assert last[f"val_recall_{avg}"] == pytest.approx(r)
        assert last[f"val_f1_{avg}"] == pytest.approx(f)
    # lr at the end of each epoch is the closed form (linear scaling x warm-up x cosine)
    steps_per_epoch = summary["steps"] // 2
    base = scaled_lr(0.2, 32, "linear")
    sched = LRSchedule(base_lr=base, total_steps=2 * steps_per_epoch, warmup_steps=steps_per_epoch,
                       kind="cosine", min_lr=0.0)
    for r in recs:
        assert r["lr"] == pytest.approx(sched(r["epoch"] * steps_per_epoch - 1))


def wait_for_checkpoint(run: Path, proc: subprocess.Popen, epoch: int, deadline: float) -> None:
    """Block until last.pt records progress inside `epoch` (a mid-epoch checkpoint)."""
    last = run / "checkpoints" / "last.pt"
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if last.is_file():
            try:
                p = torch.load(last, weights_only=True)["progress"]
                if p["epoch"] == epoch and p["micro"] > 0:
                    return
            except (EOFError, RuntimeError):
                pass
        time.sleep(0.2)
    raise AssertionError("no mid-epoch checkpoint appeared")


def worker_pids(agent: subprocess.Popen) -> list[int]:
    """The torchrun workers: the agent's child processes."""
    kids = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    return [int(k) for k in kids]


def comparable(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "time_s")} for r in recs]


def test_preempted_run_resumes_to_identical_metrics_and_weights(tmp_path, shards_odd_val):
    """SIGUSR2 mid-epoch -> coordinated checkpoint and clean exit -> resume == uninterrupted."""
    cfg = write_config(tmp_path, shards_odd_val, "resume")
    sets = ["train.epochs=2", "train.batch_size=8", "checkpoint.every_steps=2"]
    ref = tmp_path / "reference"
    finish(torchrun(cfg, ref, sets))

    run = tmp_path / "interrupted"
    proc = torchrun(cfg, run, sets)
    wait_for_checkpoint(run, proc, epoch=1, deadline=time.time() + 300)
    for pid in worker_pids(proc):
        os.kill(pid, signal.SIGUSR2)
    out = finish(proc)
    assert "preempted (SIGUSR2)" in out
    stopped = json.loads((run / "preempted.json").read_text())
    progress = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["progress"]
    assert stopped["epoch"] == progress["epoch"] == 1 and progress["micro"] > 0   # mid-epoch
    assert not (run / "summary.json").exists() and not (run / "metrics.jsonl").exists()

    finish(torchrun(cfg, run, sets))
    assert not (run / "preempted.json").exists()
    assert [r["epoch"] for r in records(run)] == [1, 2]
    for a, b in zip(comparable(records(ref)), comparable(records(run))):
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
            else:
                assert b[key] == value, key
    w_ref = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)["model"]
    w_run = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in w_ref:
        torch.testing.assert_close(w_run[k], w_ref[k], rtol=1e-6, atol=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumes"] == 1 and summary["steps"] == json.loads(
        (ref / "summary.json").read_text())["steps"]


@pytest.mark.parametrize("fixture", ["shards_fusion", "shards_combined"])
def test_fusion_and_combined_runs_end_to_end(tmp_path, fixture, request):
    shards = request.getfixturevalue(fixture)
    run = tmp_path / "run"
    finish(torchrun(write_config(tmp_path, shards, fixture), run,
                    ["train.epochs=1", "model.gate=true"]))
    summary = json.loads((run / "summary.json").read_text())
    manifest = json.loads((shards / "manifest.json").read_text())
    assert summary["modality"] == manifest["modality"]
    assert summary["best_val"]["count"] == manifest["splits"]["val"]["count"]


def test_stream_mode_single_process(tmp_path, shards_small):
    """stream mode: resampled shards, a fixed number of steps, exact evaluation all the same."""
    run = tmp_path / "stream"
    code = main(["train", "--config", str(write_config(tmp_path, shards_small, "stream")),
                 "--out", str(run), *sum((["--set", s] for s in TINY), []),
                 "--set", "data.mode=stream", "--set", "data.steps_per_epoch=3",
                 "--set", "train.epochs=1"])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3
    n_val = json.loads((shards_small / "manifest.json").read_text())["splits"]["val"]["count"]
    assert sum(map(sum, records(run)[0]["val_confusion"])) == n_val


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown config key optim.lrr; did you mean optim.lr?"),
    ("optim.lr=-1", "optim.lr = -1.0 must be positive"),
    ("train.batch_size=0", "train.batch_size = 0 must be at least 1"),
    ("data.shards=/nonexistent/shards", "has no manifest.json: build shards first"),
    ("train.amp=fp8", "choose one of auto, bf16, fp16, none"),
])
def test_bad_config_is_one_clear_error_before_any_process_group(tmp_path, shards_small, override,
                                                                message):
    cfg = write_config(tmp_path, shards_small, "bad")
    proc = subprocess.run([sys.executable, "-m", "fer_dist", "train", "--config", str(cfg), "--set",
                           override, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
