"""Keskar et al.'s epsilon-sharpness of a trained run, by projected gradient ascent in a box.

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (ICLR 2017), "On large-batch training for deep
learning: generalization gap and sharp minima", metric (3):

    sharpness = 100 * (max_{dw in C} f(w + dw) - f(w)) / (1 + f(w)),
    C = { dw : |dw_i| <= epsilon * (|w_i| + 1) for every parameter entry i }

f is the training loss (cross-entropy, with the run's label smoothing) on a fixed, seeded subset of
the training split, images normalised without augmentation, BatchNorm in eval mode (running
statistics fixed, so only the weights move). Keskar solve the inner maximum with L-BFGS-B; here a
few steps of projected sign-gradient ascent (step box/steps, then clip to the box) find it, so the
value is a lower bound of the true maximum, and it is 0 for epsilon 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fer_dist.config import Config, load_config
from fer_dist.data.augment import BatchAugment
from fer_dist.data.loader import load_split
from fer_dist.data.shards import read_manifest
from fer_dist.errors import UserError
from fer_dist import atomic
from fer_dist.train import checkpoint
from fer_dist.train.model import build_model

BATCH = 64     # images per forward pass; the loss is the mean over the whole subset


@dataclass(frozen=True)
class Probe:
    """The fixed data of the probe: normalised image batches per branch, labels."""
    images: list[torch.Tensor]
    labels: torch.Tensor
    label_smoothing: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)


def subset_loss(model: nn.Module, probe: Probe, grad: bool) -> float:
    """Mean loss over the probe's images; with grad, .grad holds its gradient (batch by batch)."""
    total = 0.0
    n = len(probe)
    for start in range(0, n, BATCH):
        images = [x[start:start + BATCH] for x in probe.images]
        labels = probe.labels[start:start + BATCH]
        with torch.set_grad_enabled(grad):
            loss = F.cross_entropy(model(images), labels, reduction="sum",
                                   label_smoothing=probe.label_smoothing) / n
        if grad:
            loss.backward()
        total += float(loss.detach())
    return total


def epsilon_sharpness(model: nn.Module, probe: Probe, epsilon: float, steps: int) -> dict[str, float]:
    """Ascend the loss inside the box around the model's weights; the weights are restored after."""
    if epsilon < 0 or steps < 1:
        raise ValueError(f"need epsilon >= 0 and steps >= 1, got {epsilon} and {steps}")
    model.eval()                                   # BatchNorm uses its running statistics
    params = [p for p in model.parameters() if p.requires_grad]
    origin = [p.detach().clone() for p in params]
    box = [epsilon * (w.abs() + 1) for w in origin]
    loss0 = subset_loss(model, probe, grad=False)
    max_loss = loss0
    try:
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            max_loss = max(max_loss, subset_loss(model, probe, grad=True))
            with torch.no_grad():
                for p, w, b in zip(params, origin, box):
                    if p.grad is not None:
                        p.add_(torch.sign(p.grad) * b / steps)
                        p.copy_(torch.minimum(torch.maximum(p, w - b), w + b))
        max_loss = max(max_loss, subset_loss(model, probe, grad=False))
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, w in zip(params, origin):
                p.copy_(w)
    value = 100.0 * (max_loss - loss0) / (1.0 + loss0)
    return {"value": value, "loss0": loss0, "max_loss": max_loss}


def probe_run(run_dir: Path, epsilon: float = 1e-3, steps: int = 10, samples: int = 256,
              seed: int = 0, which: str = "best", shards: str | None = None,
              device: str = "auto") -> dict[str, Any]:
    """Measure a run's checkpoint and store the result under "sharpness" in its summary.json."""
    run_dir = Path(run_dir)
    _check_args(run_dir, epsilon, steps, samples)
    cfg, manifest = _run_config(run_dir, shards)
    model = _load_model(run_dir, cfg, manifest, which)
    probe = _training_subset(cfg, manifest, samples, seed)
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available())
                       else "cpu")
    model.to(dev)
    probe = Probe([x.to(dev) for x in probe.images], probe.labels.to(dev), probe.label_smoothing)
    measured = epsilon_sharpness(model, probe, epsilon, steps)
    if not math.isfinite(measured["max_loss"]):
        raise UserError(f"the training loss overflows inside the box of --epsilon {epsilon:g}: "
                        "use a smaller epsilon (Keskar et al. use 1e-3 and 5e-4)")
    result = {"epsilon": epsilon, "steps": steps, "samples": len(probe), "seed": seed,
              "checkpoint": which, "method": "projected sign-gradient ascent, Keskar et al. 2017",
              **measured}
    _store(run_dir / "summary.json", result)
    return result


def _check_args(run_dir: Path, epsilon: float, steps: int, samples: int) -> None:
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} not found: give a folder written by fer-dist train")
    if not epsilon >= 0:
        raise UserError(f"--epsilon {epsilon} must be >= 0 (Keskar et al. use 1e-3 and 5e-4)")
    if steps < 1:
        raise UserError(f"--steps {steps} must be at least 1")
    if samples < 1:
        raise UserError(f"--samples {samples} must be at least 1")


def _run_config(run_dir: Path, shards: str | None) -> tuple[Config, dict]:
    """The run's resolved config (weights not re-fetched: the checkpoint has them) and manifest."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path} not found: the sharpness probe needs the config that "
                        "fer-dist train writes into the run directory")
    overrides = ["model.weights=none"] + ([f"data.shards={shards}"] if shards else [])
    cfg = load_config(path, overrides)
    return cfg, read_manifest(cfg.data.shards)


def _load_model(run_dir: Path, cfg: Config, manifest: dict, which: str) -> nn.Module:
    path = checkpoint.checkpoint_dir(run_dir) / f"{which}.pt"
    if not path.is_file():
        raise UserError(f"{path} not found: the run has no {which} checkpoint "
                        f"(try --checkpoint {'last' if which == 'best' else 'best'})")
    state = checkpoint.load(path)
    model = build_model(cfg.model, len(manifest["classes"]), manifest["modality"] == "fusion")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"checkpoint {path} does not fit the model of {run_dir / 'config.yaml'} "
                        f"({str(err).splitlines()[0]})") from None
    return model


def _training_subset(cfg: Config, manifest: dict, samples: int, seed: int) -> Probe:
    """`samples` training images drawn with `seed` (all of them if the split is smaller)."""
    split = load_split(cfg, manifest, "train")
    if len(split) == 0:
        raise UserError(f"the training split of {cfg.data.shards} is empty: nothing to probe")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(split), generator=generator)[:samples].sort().values
    images = BatchAugment(cfg.data.augment).eval([x[chosen] for x in split.images])
    return Probe(images, split.labels[chosen], cfg.train.label_smoothing)


def _store(path: Path, result: dict[str, Any]) -> None:
    """Put `result` under "sharpness" in summary.json, keeping every other key; atomic."""
    summary: dict[str, Any] = {}
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except ValueError as err:
            raise UserError(f"{path} is not valid JSON ({err}); fix or remove it, then rerun") from None
        if not isinstance(summary, dict):
            raise UserError(f"{path} must hold a JSON object; fix or remove it, then rerun")
    summary["sharpness"] = result
    atomic.write_text(path, json.dumps(summary, indent=2) + "\n")
