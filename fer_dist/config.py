"""Typed run configuration: YAML -> dataclasses, dotted `--set` overrides, one validation pass.

Everything downstream receives a `Config` object; no code below the CLI reads raw dicts.
Errors name the key (and the closest valid one), the value, and the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fer_dist.errors import UserError


@dataclass
class AugmentConfig:
    """The study's augmentation, applied per batch on the training device."""
    enabled: bool = True
    rotation_deg: float = 20.0      # uniform in [-r, r]
    zoom_out: float = 1.25          # scale drawn in [1/zoom_out, 1]: the image shrinks inside the frame
    crop_scale: float = 1.0         # scale drawn up to crop_scale (>1 zooms in: resized-crop effect)
    perspective: float = 0.15       # max corner displacement, as a fraction of the side
    shear_deg: float = 10.0
    translate: float = 0.05         # max shift, as a fraction of the side
    hflip: bool = True
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class DataConfig:
    shards: str = "shards/demo-visible"   # folder holding manifest.json and the .tar shards
    mode: Literal["auto", "memory", "stream"] = "auto"
    memory_budget_gb: float = 4.0         # `auto` decodes into memory when the split fits this
    image_size: int = 64                  # training resolution (square), px
    fold: int | None = None               # with a K-fold manifest: the fold used for validation
    steps_per_epoch: int | None = None    # stream mode; default: train count / global batch
    loader_workers: int = 2               # stream mode DataLoader workers per rank
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    arch: Literal["resnet18"] = "resnet18"
    weights: str = "none"                 # none | imagenet | PATH to a state_dict file
    gate: bool = True                     # fusion: sigmoid gate on each branch's pooled features
    dropout: float = 0.0                  # before the classifier head


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1                       # per 256 images (see scale_lr)
    scale_lr: Literal["linear", "none"] = "linear"
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    lars: bool = False
    trust_coefficient: float = 0.001
    lars_eps: float = 1e-8
    lars_clip: bool = False
    exclude_bias_and_norm: bool = True
    warmup_epochs: float = 0.0
    schedule: Literal["cosine", "none"] = "cosine"
    min_lr: float = 0.0
    grad_clip: float | None = None        # max global grad norm; none = no clipping


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32                  # per rank, per micro-step
    accum_steps: int = 1                  # gradient accumulation
    label_smoothing: float = 0.0
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"   # auto: bf16 on CUDA, none on CPU
    channels_last: Literal["auto", "on", "off"] = "auto"    # auto: on for CUDA
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "gloo", "nccl"] = "auto"       # auto: nccl on CUDA, else gloo
    seed: int = 0
    threads: int | None = None            # torch intra-op threads per rank (CPU); none = cores/ranks
    preempt_signals: list[str] = field(default_factory=lambda: ["SIGUSR2"])


@dataclass
class CheckpointConfig:
    every_steps: int = 0                  # also save last.pt every N optimizer steps (0: epoch ends only)
    keep_best: bool = True                # best.pt on each new best validation accuracy


@dataclass
class LaunchConfig:
    """Slurm resources for `fer-dist submit` (ignored by `fer-dist train`)."""
    nodes: int = 1
    gpus_per_node: int = 0
    workers_per_node: int = 1             # torchrun --nproc-per-node (defaults to gpus_per_node if >0)
    cpus_per_task: int = 2
    mem_gb: float | None = None
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch_extra: dict[str, str] = field(default_factory=dict)   # extra #SBATCH key: value
    setup: list[str] = field(default_factory=list)               # shell lines before the job
    signal_delay_s: int = 90
    max_requeues: int = 3                 # submitit max_num_timeout
    max_restarts: int = 0                 # torchrun restarts of failed workers
    rdzv_port: int | None = None          # default: derived from the job id
    job_name: str = "fer_dist"


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs"                 # the run directory is out_dir/name unless --out is given
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# ----------------------------------------------------------------------------- loading

def add_config_arguments(parser: argparse.ArgumentParser, example: str = "optim.lr=0.05") -> None:
    """--config FILE and repeatable --set KEY=VALUE, the same for every command that takes a config."""
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key, e.g. --set {example} (repeatable)")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read YAML (safe_load), apply `key.sub=value` overrides, build and validate a Config."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found: give an existing YAML file "
                            "(see configs/demo.yaml)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path} must hold a mapping of config sections, not {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    cfg = from_dict(Config, raw, source=source)
    validate(cfg, source)
    return cfg


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` to a nested dict; the value is parsed as YAML (1e-3, true, [1,2])."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {item!r}: expected KEY=VALUE, for example --set optim.lr=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {item!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key and type against its fields."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(names)}"
            raise UserError(f"{source}: unknown config key {prefix}{key}{hint}")
        kwargs[key] = _coerce(hints[key], value, source, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key)
    if origin is Literal:
        if isinstance(value, bool) and "on" in args:
            value = "on" if value else "off"     # YAML 1.1 reads a bare on/off as a boolean
        if value not in args:
            raise UserError(f"{source}: {key} = {value!r} is not allowed; choose one of "
                            + ", ".join(map(str, args)))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            value = _float_or_none(value)    # YAML 1.1 reads `1e-3` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{source}: {key} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _float_or_none(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


# ----------------------------------------------------------------------------- validation

def _require(ok: bool, source: str, key: str, value: Any, what: str) -> None:
    if not ok:
        raise UserError(f"{source}: {key} = {value!r} {what}")


def validate(cfg: Config, source: str = "config") -> None:
    """Reject impossible values before any process group or Slurm job starts."""
    d, o, t, a, lc = cfg.data, cfg.optim, cfg.train, cfg.data.augment, cfg.launch
    _require(bool(cfg.name) and "/" not in cfg.name, source, "name", cfg.name,
             "must be a non-empty name without '/'")
    _require(d.image_size >= 16, source, "data.image_size", d.image_size, "must be at least 16 px")
    _require(d.memory_budget_gb > 0, source, "data.memory_budget_gb", d.memory_budget_gb,
             "must be positive")
    _require(d.steps_per_epoch is None or d.steps_per_epoch > 0, source, "data.steps_per_epoch",
             d.steps_per_epoch, "must be positive")
    _require(d.loader_workers >= 0, source, "data.loader_workers", d.loader_workers, "must be >= 0")
    _require(d.fold is None or d.fold >= 0, source, "data.fold", d.fold, "must be >= 0")
    _require(a.zoom_out >= 1, source, "data.augment.zoom_out", a.zoom_out, "must be >= 1")
    _require(a.crop_scale >= 1, source, "data.augment.crop_scale", a.crop_scale, "must be >= 1")
    _require(0 <= a.perspective < 0.5, source, "data.augment.perspective", a.perspective,
             "must be in [0, 0.5)")
    _require(len(a.mean) == 3 and len(a.std) == 3 and min(a.std) > 0, source,
             "data.augment.mean/std", (a.mean, a.std), "must be 3 values each, std > 0")
    _require(o.lr > 0, source, "optim.lr", o.lr, "must be positive")
    _require(o.min_lr >= 0, source, "optim.min_lr", o.min_lr, "must be >= 0")
    _require(o.weight_decay >= 0, source, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _require(0 <= o.momentum < 1, source, "optim.momentum", o.momentum, "must be in [0, 1)")
    _require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), source, "optim.betas",
             o.betas, "must be two values in [0, 1)")
    _require(o.trust_coefficient > 0, source, "optim.trust_coefficient", o.trust_coefficient,
             "must be positive")
    _require(o.warmup_epochs >= 0, source, "optim.warmup_epochs", o.warmup_epochs, "must be >= 0")
    _require(o.grad_clip is None or o.grad_clip > 0, source, "optim.grad_clip", o.grad_clip,
             "must be positive (or null for no clipping)")
    _require(t.epochs >= 1, source, "train.epochs", t.epochs, "must be at least 1")
    _require(o.warmup_epochs <= t.epochs, source, "optim.warmup_epochs", o.warmup_epochs,
             f"is longer than the run (train.epochs = {t.epochs}): lower it or train longer")
    _require(t.batch_size >= 1, source, "train.batch_size", t.batch_size, "must be at least 1")
    _require(t.accum_steps >= 1, source, "train.accum_steps", t.accum_steps, "must be at least 1")
    _require(0 <= t.label_smoothing < 1, source, "train.label_smoothing", t.label_smoothing,
             "must be in [0, 1)")
    _require(t.threads is None or t.threads >= 1, source, "train.threads", t.threads, "must be >= 1")
    _require(cfg.checkpoint.every_steps >= 0, source, "checkpoint.every_steps",
             cfg.checkpoint.every_steps, "must be >= 0")
    _require(cfg.model.weights in ("none", "imagenet") or Path(cfg.model.weights).is_file(), source,
             "model.weights", cfg.model.weights, "must be none, imagenet, or an existing file")
    _require(0 <= cfg.model.dropout < 1, source, "model.dropout", cfg.model.dropout, "must be in [0, 1)")
    _require(lc.nodes >= 1, source, "launch.nodes", lc.nodes, "must be at least 1")
    _require(lc.gpus_per_node >= 0, source, "launch.gpus_per_node", lc.gpus_per_node, "must be >= 0")
    _require(lc.workers_per_node >= 1, source, "launch.workers_per_node", lc.workers_per_node,
             "must be at least 1")
    _require(lc.time_min >= 1, source, "launch.time_min", lc.time_min, "must be at least 1 minute")
    _require(lc.max_restarts >= 0 and lc.max_requeues >= 0, source, "launch.max_restarts",
             lc.max_restarts, "and launch.max_requeues must be >= 0")
    manifest = Path(d.shards) / "manifest.json"
    _require(manifest.is_file(), source, "data.shards", d.shards,
             f"has no {manifest.name}: build shards first (fer-dist build-shards ... --out {d.shards})")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML, loadable again by load_config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
