"""The numbers a run records: one metrics.jsonl record per epoch, and summary.json at the end."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from fer_dist.config import Config
from fer_dist.train.checkpoint import Progress
from fer_dist.train.dist import DistEnv
from fer_dist.train.metrics import classification_metrics


def split_metrics(confusion: torch.Tensor, loss: float, classes: list[str]) -> dict:
    """Accuracy, precision/recall/F1 (macro, weighted, per class), loss, confusion and count."""
    m = classification_metrics(confusion, classes)
    m.update(loss=loss, confusion=confusion.tolist(), count=int(confusion.sum()))
    return m


def epoch_record(progress: Progress, confusion: torch.Tensor, val_loss: float,
                 classes: list[str]) -> dict:
    """The metrics.jsonl line of the epoch just trained (progress.epoch_sums are global sums)."""
    loss_sum, correct, count, seconds = progress.epoch_sums
    val = split_metrics(confusion, val_loss, classes)
    record = {"epoch": progress.epoch, "lr": progress.lr,
              "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
              "val_loss": val_loss, "val_acc": val["accuracy"], "val_confusion": val["confusion"]}
    for key in ("precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "per_class"):
        record["val_" + key] = val[key]
    record.update(images_per_s=count / seconds if seconds > 0 else 0.0, time_s=seconds)
    return record


def run_summary(cfg: Config, env: DistEnv, manifest: dict, progress: Progress, records: list[dict],
                test: dict, wall_s: float) -> dict:
    """summary.json: what the report and a reader need without re-reading the epochs."""
    best = next((r for r in records if r["epoch"] == progress.best_epoch), records[-1])
    best_val = {"accuracy": best["val_acc"], "loss": best["val_loss"],
                "confusion": best["val_confusion"], "count": sum(map(sum, best["val_confusion"])),
                "per_class": best["val_per_class"]}
    for key in ("precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted"):
        best_val[key] = best["val_" + key]
    optimizer = cfg.optim.name + ("+lars" if cfg.optim.lars else "")
    return {
        "name": cfg.name, "classes": manifest["classes"], "modality": manifest["modality"],
        "dataset": Path(os.path.abspath(cfg.data.shards)).name, "schedule": cfg.optim.schedule,
        "optimizer": optimizer, "fold": cfg.data.fold,
        "split_counts": {name: s["count"] for name, s in manifest["splits"].items()},
        "epochs": len(records), "best_epoch": best["epoch"], "best_val": best_val,
        "test": test or None, "world_size": env.world_size,
        "global_batch": cfg.train.batch_size * env.world_size * cfg.train.accum_steps,
        "steps": progress.step, "wall_time_s": wall_s,
        "train_time_s": sum(r["time_s"] for r in records),
        "requeues": max(a["slurm_restart_count"] for a in progress.attempts),
        "restarts": sum(1 for a in progress.attempts if a["torchelastic_restart_count"] > 0),
        "resumes": sum(1 for a in progress.attempts if a["resumed"]),
        "attempts": progress.attempts,
    }
