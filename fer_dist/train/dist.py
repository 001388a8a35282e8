"""Process-group setup and the few collectives training needs; the one place that knows ranks.

Whoever started us (torchrun, the Slurm launcher, or nobody) leaves RANK/WORLD_SIZE/LOCAL_RANK in
the environment; a plain `fer-dist train` is world size 1 and starts no process group.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fer_dist.config import TrainConfig
from fer_dist.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None          # None: single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) when nobody did."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        return int(value) if value.strip() else default
    return read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0)


def pick_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    """CUDA device local_rank when available (or asked for), otherwise the CPU."""
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is visible: use --set train.device=cpu")
    torch.cuda.set_device(local_rank % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())


def setup(cfg: TrainConfig) -> DistEnv:
    """Join the process group that the launcher described (gloo on CPU, nccl on GPU by default)."""
    rank, world, local = ranks_from_env()
    device = pick_device(cfg, local)
    backend = None
    if world > 1:
        backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        if backend == "nccl" and device.type != "cuda":
            raise UserError("train.backend = 'nccl' needs CUDA devices: use gloo on CPU")
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(minutes=30),
                                    device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world, local, device, backend)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum over ranks, in place; every rank must call it (it is a collective)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when `flag` is true on at least one (a collective: call it on all ranks)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
