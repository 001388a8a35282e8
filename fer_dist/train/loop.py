"""One training epoch and one exact evaluation: the inner story of a run.

train_one_epoch: augment on the device -> forward under autocast -> backward (DDP averages the
gradients) -> optimizer step at each accumulation boundary -> at every step boundary, ask all ranks
whether a preemption signal arrived and checkpoint when asked or due.
evaluate: the unwrapped model on this rank's share, no collective inside, then one all_reduce.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fer_dist.config import Config
from fer_dist.data.augment import BatchAugment
from fer_dist.launch.signals import PreemptionFlag
from fer_dist.optim.schedule import LRSchedule
from fer_dist.train.checkpoint import Progress
from fer_dist.train.dist import DistEnv, all_reduce_sum
from fer_dist.train.metrics import confusion_matrix


@dataclass
class Trainer:
    """Everything a step needs, built once by the run and passed around as one object."""
    cfg: Config
    env: DistEnv
    model: nn.Module              # DDP-wrapped when distributed; used for training steps
    net: nn.Module                # the unwrapped model: evaluation and checkpoints
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None
    augment: BatchAugment
    amp_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def to_device(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return [im.to(self.env.device, non_blocking=True).contiguous(memory_format=fmt)
                for im in images]


def batch_seed(seed: int, epoch: int, micro: int, rank: int) -> int:
    """Augmentation seed of one micro-batch: a pure function of where it is, so resumes replay it."""
    return ((seed * 1_000_003 + epoch) * 100_003 + micro) * 1_009 + rank


def _optimizer_step(t: Trainer, progress: Progress) -> float:
    lr = t.schedule.apply(t.optimizer, progress.step)
    if t.scaler is not None:
        t.scaler.unscale_(t.optimizer)
    if t.cfg.optim.grad_clip:
        nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.optim.grad_clip)
    if t.scaler is not None:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    progress.step += 1
    return lr


def train_one_epoch(t: Trainer, source, progress: Progress, flag: PreemptionFlag,
                    save: Callable[[Progress], None],
                    on_step: Callable[[torch.Tensor, int], None]) -> bool:
    """Train from progress.micro to the end of progress.epoch; True if stopped for preemption."""
    accum, n_micro = t.cfg.train.accum_steps, source.micro_batches()
    # Running sums (loss, correct, count); rank 0 carries what earlier attempts of this epoch summed.
    sums = torch.tensor(progress.epoch_sums[:3] if t.env.is_main else [0.0] * 3, dtype=torch.float64,
                        device=t.env.device)
    t0, t_prev = time.perf_counter(), progress.epoch_sums[3]
    t.model.train()
    for micro, (images, labels) in enumerate(source.batches(progress.epoch, progress.micro),
                                             start=progress.micro):
        group_end = min((micro // accum + 1) * accum, n_micro)
        x = t.augment.train(t.to_device(images), batch_seed(t.cfg.train.seed, progress.epoch, micro,
                                                            t.env.rank))
        y = labels.to(t.env.device, non_blocking=True)
        # DDP all-reduces gradients on every backward unless told not to: skip it inside a group.
        sync = micro + 1 == group_end or not t.env.distributed
        with (contextlib.nullcontext() if sync else t.model.no_sync()), t.autocast():
            logits = t.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=t.cfg.train.label_smoothing)
        scaled = loss / (group_end - micro // accum * accum)
        (t.scaler.scale(scaled) if t.scaler is not None else scaled).backward()
        # Kept on the device: a .item() here would stall the GPU pipeline every micro-batch.
        sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)])
        if micro + 1 != group_end:
            continue
        progress.lr = _optimizer_step(t, progress)
        progress.micro = micro + 1
        on_step(loss.detach(), len(y) * (group_end - micro // accum * accum))
        stop = flag.stop_requested(t.env)
        every = t.cfg.checkpoint.every_steps
        if stop or (every and progress.step % every == 0 and progress.micro < n_micro):
            _carry_sums(t, progress, sums, t_prev + time.perf_counter() - t0)
            save(progress)
        if stop:
            return True
    _carry_sums(t, progress, sums, t_prev + time.perf_counter() - t0)
    return False


def _carry_sums(t: Trainer, progress: Progress, sums: torch.Tensor, seconds: float) -> None:
    """Reduce this epoch's running sums over ranks into progress (a collective: all ranks call it)."""
    total = all_reduce_sum(sums.clone(), t.env)
    progress.epoch_sums = total.cpu().tolist() + [seconds]


@torch.no_grad()
def evaluate(t: Trainer, eval_set, num_classes: int) -> tuple[torch.Tensor, float]:
    """Exact confusion matrix and mean loss over a split: every sample once across all ranks."""
    t.net.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for images, labels in eval_set.batches(2 * t.cfg.train.batch_size):
        y = labels.to(t.env.device)
        with t.autocast():
            logits = t.net(t.augment.eval(t.to_device(images)))
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
        confusion += confusion_matrix(y.cpu(), logits.argmax(1).cpu(), num_classes)
    # One reduction, after the loop: ranks hold unequal shares, so no collective may sit inside it.
    packed = torch.cat([confusion.flatten().double(), loss_sum.view(1)]).to(t.env.device)
    packed = all_reduce_sum(packed, t.env).cpu()
    confusion = packed[:-1].round().long().view(num_classes, num_classes)
    total = int(confusion.sum())
    if total != eval_set.count:
        raise RuntimeError(f"exact evaluation saw {total} samples but the manifest says "
                           f"{eval_set.count} for {eval_set.parts}: shards and manifest disagree "
                           "(run fer-dist verify-shards)")
    return confusion, float(packed[-1]) / max(total, 1)
