"""A whole training run, top to bottom: set up, resume, epochs, test, summary.

The same code runs as one process (`fer-dist train`) or as each torchrun worker; only rank 0 writes
files and prints (through the Logbook), and every collective is reached by all ranks.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from fer_dist.config import Config, dump_yaml
from fer_dist.data.augment import BatchAugment
from fer_dist.data.loader import EvalSet, MemoryTrain, StreamTrain, train_source
from fer_dist.data.shards import read_manifest
from fer_dist.launch.signals import PreemptionFlag
from fer_dist.optim.lars import build_optimizer
from fer_dist.optim.schedule import LRSchedule, scaled_lr
from fer_dist.train import checkpoint, dist
from fer_dist.train.checkpoint import Progress
from fer_dist.train.logbook import Logbook
from fer_dist.train.loop import Trainer, evaluate, train_one_epoch
from fer_dist.train.model import build_model
from fer_dist.train.records import epoch_record, run_summary, split_metrics


def run_training(cfg: Config, run_dir: Path) -> str:
    """Train (or resume) the run in run_dir; returns "done" or "preempted"."""
    # First of all: a preemption signal during the (slow) setup must not kill the worker.
    flag = PreemptionFlag(cfg.train.preempt_signals).install()
    env = dist.setup(cfg.train)
    try:
        return _run(cfg, Path(run_dir), env, flag)
    finally:
        dist.teardown(env)


def _run(cfg: Config, run_dir: Path, env: dist.DistEnv, flag: PreemptionFlag) -> str:
    wall0 = time.time()
    log = Logbook(run_dir, env.is_main, env.world_size)
    log.write_text("config.yaml", dump_yaml(cfg))
    manifest, source, evals, t = prepare(cfg, env)
    progress = resume(t, run_dir, log)
    save = Saver(run_dir, t)
    log.info(f"{cfg.name}: {env.world_size} rank(s) on {env.device}, {manifest['modality']} data, "
             f"{source.images_per_epoch()} train images/epoch, global batch "
             f"{cfg.train.batch_size * env.world_size * cfg.train.accum_steps}, "
             f"starting at epoch {progress.epoch} step {progress.step}")
    while progress.epoch <= cfg.train.epochs:
        log.start_epoch(progress.epoch, cfg.train.epochs, source.micro_batches(), progress.micro)
        if train_one_epoch(t, source, progress, flag, save.last, log.step):
            log.write_json("preempted.json", {"epoch": progress.epoch, "step": progress.step,
                                              "signal": flag.received, "time": time.time()})
            log.info(f"preempted ({flag.received}): checkpoint saved at epoch {progress.epoch} "
                     f"step {progress.step}; the next start resumes from it")
            dist.barrier(env)
            return "preempted"
        close_epoch(t, evals["val"], manifest["classes"], progress, log, save)
    finish(t, run_dir, log, evals, progress, manifest, wall0)
    return "done"


def prepare(cfg: Config, env: dist.DistEnv) -> tuple[dict, MemoryTrain | StreamTrain, dict, Trainer]:
    """The manifest, this rank's training source and evaluation shares, and the Trainer."""
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // env.world_size))
    manifest = read_manifest(cfg.data.shards)
    source = train_source(cfg, manifest, env.rank, env.world_size)
    memory = isinstance(source, MemoryTrain)
    evals = {s: EvalSet(cfg, manifest, s, env.rank, env.world_size, memory) for s in ("val", "test")}
    steps_per_epoch = -(-source.micro_batches() // cfg.train.accum_steps)
    t = build_trainer(cfg, env, len(manifest["classes"]), manifest["modality"] == "fusion",
                      steps_per_epoch)
    return manifest, source, evals, t


class Saver:
    """Rank 0 writes checkpoints/last.pt and best.pt; on other ranks saving is a no-op."""

    def __init__(self, run_dir: Path, t: Trainer):
        self.folder, self.t = checkpoint.checkpoint_dir(run_dir), t

    def last(self, progress: Progress) -> None:
        self._save("last.pt", progress)

    def best(self, progress: Progress) -> None:
        if self.t.cfg.checkpoint.keep_best:
            self._save("best.pt", progress)

    def _save(self, name: str, progress: Progress) -> None:
        if self.t.env.is_main:
            checkpoint.save(self.folder / name, self.t.net, self.t.optimizer, progress, self.t.scaler)


def close_epoch(t: Trainer, val: EvalSet, classes: list[str], progress: Progress, log: Logbook,
                save: Saver) -> None:
    """Evaluate, record the epoch, move progress to the next epoch, checkpoint (best too)."""
    confusion, val_loss = evaluate(t, val, len(classes))
    record = epoch_record(progress, confusion, val_loss, classes)
    log.end_epoch(record, t.cfg.train.epochs)
    log.append_epoch(record)
    improved = record["val_acc"] > progress.best_val_acc
    if improved:
        progress.best_val_acc, progress.best_epoch = record["val_acc"], progress.epoch
    progress.epoch, progress.micro, progress.epoch_sums = progress.epoch + 1, 0, [0.0] * 4
    # best.pt before last.pt: a crash between the two then replays the epoch, whereas the other
    # order could resume from a last.pt whose best epoch has no best.pt.
    if improved:
        save.best(progress)
    save.last(progress)
    dist.barrier(t.env)    # best.pt is complete before any rank might read it


def build_trainer(cfg: Config, env: dist.DistEnv, num_classes: int, fusion: bool,
                  steps_per_epoch: int) -> Trainer:
    """Model on its device (DDP-wrapped when distributed), optimizer, lr schedule, AMP."""
    cuda = env.device.type == "cuda"
    channels_last = cfg.train.channels_last == "on" or (cfg.train.channels_last == "auto" and cuda)
    amp = {"auto": "bf16" if cuda else "none"}.get(cfg.train.amp, cfg.train.amp)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]
    net = build_model(cfg.model, num_classes, fusion).to(env.device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = DistributedDataParallel(net, device_ids=[env.device.index] if cuda else None) \
        if env.distributed else net
    global_batch = cfg.train.batch_size * env.world_size * cfg.train.accum_steps
    lr = scaled_lr(cfg.optim.lr, global_batch, cfg.optim.scale_lr)
    optimizer = build_optimizer(net, cfg.optim, lr)
    schedule = LRSchedule.from_config(cfg.optim, lr, steps_per_epoch, cfg.train.epochs)
    scaler = torch.amp.GradScaler(env.device.type) if amp == "fp16" else None
    return Trainer(cfg, env, model, net, optimizer, schedule, scaler, BatchAugment(cfg.data.augment),
                   amp_dtype, channels_last)


def resume(t: Trainer, run_dir: Path, log: Logbook) -> Progress:
    """Continue from checkpoints/last.pt when there is one; note who restarted us and why."""
    last = checkpoint.checkpoint_dir(run_dir) / "last.pt"
    progress = checkpoint.restore(last, t.net, t.optimizer, t.scaler) if last.is_file() else Progress()
    progress.attempts.append({
        "epoch": progress.epoch, "step": progress.step, "resumed": last.is_file(),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "torchelastic_restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "time": time.time()})
    if last.is_file():
        log.info(f"resuming from {last} (epoch {progress.epoch}, step {progress.step})")
    log.keep_epochs_before(progress.epoch)
    return progress


def finish(t: Trainer, run_dir: Path, log: Logbook, evals: dict, progress: Progress,
           manifest: dict, wall0: float) -> None:
    """Test metrics of the last and the best-validation weights, then summary.json and a table."""
    classes, test = manifest["classes"], {}
    if evals["test"].count:
        test["last"] = split_metrics(*evaluate(t, evals["test"], len(classes)), classes)
        best = checkpoint.checkpoint_dir(run_dir) / "best.pt"
        if t.cfg.checkpoint.keep_best and best.is_file():
            t.net.load_state_dict(checkpoint.load(best)["model"])
            test["best"] = split_metrics(*evaluate(t, evals["test"], len(classes)), classes)
    summary = run_summary(t.cfg, t.env, manifest, progress, log.records(), test, time.time() - wall0)
    log.write_json("summary.json", summary)
    if log.is_main:
        (run_dir / "preempted.json").unlink(missing_ok=True)
    log.final_table(summary)
