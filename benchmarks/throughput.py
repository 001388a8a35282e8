"""Training throughput: end-to-end from the shards vs the model alone, as a ratio within one run.

end-to-end: the real train_one_epoch (shard-decoded split, seeded order, device-side augmentation,
            forward/backward/optimizer step) over one epoch;
model-only: the same number of steps on one batch already in memory, augmentation skipped.
The machine is shared and noisy, so only the ratio of the two, measured back to back, is meaningful.

    .venv/bin/python benchmarks/throughput.py --shards demo/shards/visible --size 64 --batch 32
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fer_dist.config import load_config
from fer_dist.data.loader import train_source
from fer_dist.data.shards import read_manifest
from fer_dist.launch.signals import PreemptionFlag
from fer_dist.train import dist
from fer_dist.train.checkpoint import Progress
from fer_dist.train.loop import train_one_epoch
from fer_dist.train.run import build_trainer


def model_only(t, images: list[torch.Tensor], labels: torch.Tensor, steps: int) -> float:
    """Images/s of forward + backward + step on one resident, pre-normalised batch."""
    x = t.augment.eval(t.to_device(images))
    y = labels.to(t.env.device)
    t.model.train()
    start = time.perf_counter()
    for _ in range(steps):
        with t.autocast():
            loss = F.cross_entropy(t.model(x), y)
        loss.backward()
        t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)
    return steps * len(y) / (time.perf_counter() - start)


def end_to_end(t, source, epoch: int) -> tuple[float, int]:
    """Images/s of one real training epoch; returns (rate, micro-batches)."""
    progress = Progress(epoch=epoch)
    flag = PreemptionFlag([])
    start = time.perf_counter()
    train_one_epoch(t, source, progress, flag, save=lambda p: None, on_step=lambda loss, n: None)
    return progress.epoch_sums[2] / (time.perf_counter() - start), source.micro_batches()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurements of each")
    args = ap.parse_args()
    cfg = load_config(None, [f"data.shards={args.shards}", f"data.image_size={args.size}",
                             f"train.batch_size={args.batch}", "data.mode=memory"])
    env = dist.setup(cfg.train)
    manifest = read_manifest(cfg.data.shards)
    source = train_source(cfg, manifest, env.rank, env.world_size)
    t = build_trainer(cfg, env, len(manifest["classes"]), manifest["modality"] == "fusion",
                      source.micro_batches())
    images, labels = next(source.batches(1, 0))
    end_to_end(t, source, 1)                                # warm-up: allocator, kernels
    e2e, solo = [], []
    for r in range(args.rounds):
        rate, steps = end_to_end(t, source, r + 2)
        e2e.append(rate)
        solo.append(model_only(t, images, labels, steps))
    a, b = statistics.median(e2e), statistics.median(solo)
    print(f"device {env.device}, {args.size} px, batch {args.batch}, {steps} steps/epoch, "
          f"{args.rounds} rounds")
    print(f"end-to-end from shards: {a:8.1f} img/s   (rounds: {', '.join(f'{x:.1f}' for x in e2e)})")
    print(f"model only, in memory:  {b:8.1f} img/s   (rounds: {', '.join(f'{x:.1f}' for x in solo)})")
    print(f"ratio end-to-end / model-only: {a / b:.3f}")


if __name__ == "__main__":
    main()
