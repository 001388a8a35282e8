"""Checkpoints: atomic save by rank 0, resume of everything that shapes the rest of the run.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: nothing in it can execute code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fer_dist import atomic
from fer_dist.errors import UserError


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint and restored on resume."""
    epoch: int = 1                 # the epoch being trained (1-based)
    micro: int = 0                 # next micro-batch of that epoch (always at an optimizer-step boundary)
    step: int = 0                  # optimizer steps taken since the run began
    lr: float = 0.0                # learning rate of the last step
    best_val_acc: float = -1.0
    best_epoch: int = 0
    # globally reduced running sums of the current epoch: loss_sum, correct, count, seconds
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    attempts: list[dict] = field(default_factory=list)   # one entry per start: resumes, requeues


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
         scaler: torch.amp.GradScaler | None) -> None:
    """Rank 0 only: model (unwrapped), optimizer (LARS included), progress and RNG state."""
    atomic.write_file(path, lambda fh: torch.save({
        "format_version": 1,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": asdict(progress),
        "rng_cpu": torch.get_rng_state(),
    }, fh), mode="wb")


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot load checkpoint {path} ({err}): delete it to start afresh, "
                        "or give another --out") from None


def restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None) -> Progress:
    """Load a checkpoint into model/optimizer/scaler on every rank; return the saved progress."""
    state = load(path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(f"checkpoint {path} does not fit this config's model/optimizer ({err}): "
                        "use a new --out for a different config") from None
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    return Progress(**state["progress"])
