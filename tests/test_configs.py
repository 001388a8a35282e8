"""The study's protocol as configs: every shipped config validates, encodes its protocol, and starts.

The paper and large-batch configs are GPU-sized and point at VIRI shards that are not here, with
ImageNet weights that cannot be downloaded offline. Each is run in-process for one optimizer step at
32 px on the session's synthetic shards of its modality, with `--set` overrides; everything not
overridden must reach the run's config.yaml unchanged (launch sections untouched).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fer_dist.cli import main
from fer_dist.config import load_config
from fer_dist.launch.grid import SECTIONS as GRID_SECTIONS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MODALITIES = ("visible", "infrared", "combined", "fusion")
SHARD_FIXTURES = {"visible": "shards_small", "infrared": "shards_infrared",
                  "combined": "shards_combined", "fusion": "shards_fusion"}
STUDY_AUGMENT = {"rotation_deg": 20, "zoom_out": 1.25, "perspective": 0.15, "shear_deg": 10,
                 "hflip": True}
BATCH = 4


def raw_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def train_configs(folder: str) -> list[Path]:
    """The training configs of a folder (a grid file there, if any, is not one)."""
    paths = sorted((CONFIGS / folder).glob("*.yaml"))
    return [p for p in paths if not set(raw_yaml(p)) & set(GRID_SECTIONS)]


def modality_of(raw: dict) -> str:
    """The modality a config's data.shards names (shards/viri-<modality>)."""
    name = Path(raw["data"]["shards"]).name
    found = [m for m in MODALITIES if name.endswith(m)]
    assert len(found) == 1, f"cannot tell the modality of data.shards = {raw['data']['shards']}"
    return found[0]


def leaves(tree: dict, prefix: str = "") -> dict:
    """Nested mapping -> {dotted.key: value} of its non-mapping values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def tiny_overrides(raw: dict, shards: Path) -> dict[str, object]:
    """What makes a GPU-sized config one CPU optimizer step at 32 px on local synthetic shards."""
    over = {"data.shards": str(shards), "model.weights": "none", "data.image_size": 32,
            "train.epochs": 1, "data.mode": "stream", "data.steps_per_epoch": 1,
            "data.loader_workers": 0, "train.batch_size": BATCH, "train.threads": 1}
    if raw["optim"].get("warmup_epochs", 0) > 1:
        over["optim.warmup_epochs"] = 1        # warm-up may not outlast the one-epoch run
    return over


# ----------------------------------------------------------------------------- every config starts

@pytest.mark.parametrize("path", train_configs("paper") + train_configs("large-batch"),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_runs_one_step_on_cpu(path: Path, tmp_path: Path, request) -> None:
    raw = raw_yaml(path)
    modality = modality_of(raw)
    shards = request.getfixturevalue(SHARD_FIXTURES[modality])
    over = tiny_overrides(raw, shards)
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(path), "--out", str(run_dir)]
    for key, value in over.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0

    summary = json.loads((run_dir / "summary.json").read_text())
    manifest = json.loads((shards / "manifest.json").read_text())
    assert summary["steps"] == 1 and summary["epochs"] == 1
    assert summary["modality"] == modality == manifest["modality"]
    assert summary["name"] == raw["name"] == path.stem
    assert summary["schedule"] == raw["optim"]["schedule"]
    assert summary["optimizer"] == raw["optim"]["name"] + ("+lars" if raw["optim"].get("lars") else "")
    assert summary["global_batch"] == BATCH
    assert summary["test"]["last"]["count"] == manifest["splits"]["test"]["count"]

    written = leaves(yaml.safe_load((run_dir / "config.yaml").read_text()))
    for key, value in leaves(raw).items():
        assert written[key] == over.get(key, value), f"{key} in {path.name}"
    for key, value in over.items():
        assert written[key] == value, key

    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    scale = BATCH / 256 if raw["optim"]["scale_lr"] == "linear" else 1.0
    assert record["lr"] == pytest.approx(raw["optim"]["lr"] * scale)   # step 0: full rate either way


# ----------------------------------------------------------------------------- what they encode

def test_paper_configs_encode_the_study_protocol(shards_small: Path) -> None:
    paths = train_configs("paper")
    pairs = set()
    for path in paths:
        raw = raw_yaml(path)
        cfg = load_config(path, [f"data.shards={shards_small}"])    # validates all the rest as is
        assert cfg.name == path.stem and cfg.out_dir == "runs/paper"
        assert cfg.model.arch == "resnet18" and cfg.model.weights == "imagenet"
        assert (cfg.train.epochs, cfg.data.image_size, cfg.train.batch_size) == (50, 224, 64)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.scale_lr) == ("adam", 1e-3, "none")
        assert cfg.optim.weight_decay == 0 and cfg.optim.warmup_epochs == 0
        assert not cfg.optim.lars and cfg.train.accum_steps == 1
        assert cfg.checkpoint.keep_best                      # best-val checkpoint goes to test
        assert cfg.launch.nodes * max(cfg.launch.gpus_per_node, 1) == 1   # batch 64 is global
        augment = cfg.data.augment
        assert augment.enabled and {k: getattr(augment, k) for k in STUDY_AUGMENT} == STUDY_AUGMENT
        if modality_of(raw) == "fusion":
            assert cfg.model.gate and raw["model"]["gate"] is True   # the study's "attention"
        pairs.add((modality_of(raw), cfg.optim.schedule))
    assert len(paths) == len(pairs) == 7
    assert pairs == {(m, s) for m in ("visible", "infrared", "combined") for s in ("cosine", "none")} \
        | {("fusion", "cosine")}


def test_large_batch_configs_change_only_the_optimizer(shards_small: Path) -> None:
    paper = load_config(CONFIGS / "paper" / "visible-cosine.yaml", [f"data.shards={shards_small}"])
    modalities = []
    for path in train_configs("large-batch"):
        raw = raw_yaml(path)
        cfg = load_config(path, [f"data.shards={shards_small}"])
        modalities.append(modality_of(raw))
        assert cfg.name == path.stem and cfg.out_dir == "runs/large-batch"
        assert (cfg.optim.name, cfg.optim.lars, cfg.optim.scale_lr) == ("sgd", True, "linear")
        assert cfg.optim.warmup_epochs > 0 and cfg.optim.schedule == "cosine"
        global_batch = cfg.train.batch_size * cfg.launch.nodes * cfg.launch.workers_per_node
        assert global_batch > paper.train.batch_size
        assert cfg.launch.workers_per_node == cfg.launch.gpus_per_node
        assert (cfg.train.epochs, cfg.data.image_size, cfg.model.weights) == \
            (paper.train.epochs, paper.data.image_size, paper.model.weights)
        assert cfg.data.augment == paper.data.augment
    assert sorted(modalities) == ["combined", "infrared", "visible"]


def test_demo_config_loads(shards_small: Path) -> None:
    """The demo's config (its shards are built by `make demo`, so they are pointed elsewhere here)."""
    cfg = load_config(CONFIGS / "demo.yaml", [f"data.shards={shards_small}"])
    # CPU-sized (32-64 px, a few epochs, no download) and on the design card's optimizer
    assert cfg.name == "demo" and cfg.model.weights == "none" and 32 <= cfg.data.image_size <= 64
    assert (cfg.optim.name, cfg.optim.lars, cfg.optim.scale_lr) == ("sgd", True, "linear")
    assert cfg.train.epochs <= 20 and cfg.train.batch_size == 32


def test_paper_grid_is_the_seven_paper_configs(shards_small: Path) -> None:
    """configs/paper/grid.yaml over visible-cosine.yaml gives exactly the seven paper configs."""
    from dataclasses import asdict

    from fer_dist.launch.grid import load_grid

    entries = load_grid(CONFIGS / "paper" / "grid.yaml")
    files = {p.stem: p for p in train_configs("paper")}
    assert sorted(e.values["name"] for e in entries) == sorted(files)
    pin = [f"data.shards={shards_small}"]
    for entry in entries:
        from_grid = load_config(CONFIGS / "paper" / "visible-cosine.yaml", entry.overrides() + pin)
        from_file = load_config(files[entry.values["name"]], pin)
        grid_dict, file_dict = asdict(from_grid), asdict(from_file)
        expected_shards = raw_yaml(files[entry.values["name"]])["data"]["shards"]
        assert entry.values["data.shards"] == expected_shards
        assert grid_dict == file_dict, entry.values["name"]
