"""`fer-dist train`: one process, or each torchrun worker (`torchrun ... -m fer_dist train ...`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from fer_dist.config import add_config_arguments, load_config

EPILOG = """\
examples:
  fer-dist train --config configs/demo.yaml
  torchrun --nproc-per-node 2 -m fer_dist train --config configs/demo.yaml --out runs/demo
  fer-dist train --config configs/demo.yaml --set optim.lars=true --set train.epochs=3

A run directory that holds checkpoints/last.pt is resumed, not restarted.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on built shards (also under torchrun)",
                       description="Train ResNet-18 on webdataset shards; DDP when launched by "
                                   "torchrun (gloo on CPU, nccl on GPU).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--out", help="run directory (default: <out_dir>/<name> from the config)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from fer_dist.train.run import run_training   # torch import only when training
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.out) if args.out else cfg.run_dir()
    run_training(cfg, run_dir)
    return 0
