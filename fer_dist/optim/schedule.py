"""Learning rate per optimizer step, in closed form: linear warm-up, then cosine or constant.

The rate is a pure function of the step, so a resumed run needs only the step counter (no
scheduler state), and the schedule is set once per step (never stepped twice, never by epoch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from fer_dist.config import OptimConfig
from fer_dist.errors import UserError


def scaled_lr(lr_per_256: float, global_batch: int, scale: str) -> float:
    """The base rate for `global_batch` images per step: linear scaling rule or none."""
    if global_batch < 1:
        raise ValueError(f"global batch must be at least 1, got {global_batch}")
    if scale == "linear":
        return lr_per_256 * global_batch / 256
    if scale == "none":
        return lr_per_256
    raise ValueError(f"unknown lr scaling {scale!r}: use linear or none")


@dataclass(frozen=True)
class LRSchedule:
    """lr(step) for 0-based optimizer steps: warm-up to base_lr, then cosine to min_lr or constant."""
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    kind: Literal["cosine", "none"] = "cosine"
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "none"):
            raise ValueError(f"unknown schedule {self.kind!r}: use cosine or none")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                             f"got {self.warmup_steps} and {self.total_steps}")
        if self.base_lr < 0 or self.min_lr < 0:
            raise ValueError(f"learning rates must be >= 0, got {self.base_lr} and {self.min_lr}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "none":
            return self.base_lr
        span = self.total_steps - self.warmup_steps
        if span == 0:                       # warm-up took every step; later steps sit at the end
            return self.min_lr
        t = min(step - self.warmup_steps, span)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t / span))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every param group's lr to lr(step) (in place for tensor lrs); return it."""
        lr = self(step)
        for group in optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        return lr

    @classmethod
    def from_config(cls, cfg: OptimConfig, base_lr: float, steps_per_epoch: int,
                    epochs: int) -> LRSchedule:
        """The configured schedule over `epochs` of `steps_per_epoch` optimizer steps."""
        total = steps_per_epoch * epochs
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        if warmup > total:
            raise UserError(f"optim.warmup_epochs = {cfg.warmup_epochs} is longer than the run "
                            f"({epochs} epochs): lower it or train longer")
        if cfg.schedule == "cosine" and cfg.min_lr > base_lr:
            raise UserError(f"optim.min_lr = {cfg.min_lr} exceeds the (scaled) base lr {base_lr}: "
                            "the cosine would rise; lower optim.min_lr")
        return cls(base_lr=base_lr, total_steps=total, warmup_steps=warmup, kind=cfg.schedule,
                   min_lr=cfg.min_lr)
