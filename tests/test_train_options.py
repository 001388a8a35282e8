"""Training options beyond the defaults: weights sources, accumulation, clipping, mixed precision."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fer_dist.cli import main
from fer_dist.config import ModelConfig
from fer_dist.errors import UserError
from fer_dist.train.model import build_model


def train(tmp_path: Path, shards: Path, *sets: str) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"name": "opt", "data": {"shards": str(shards)}}))
    run = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--out", str(run)]
    for s in ("data.image_size=32", "train.threads=1", "data.loader_workers=0", "train.epochs=1",
              *sets):
        args += ["--set", s]
    assert main(args) == 0
    return run


def test_imagenet_weights_offline_name_the_path_alternative(tmp_path, monkeypatch):
    """No network here: a clear error naming model.weights=PATH (with a network: real weights)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))   # no cached download
    try:
        model = build_model(ModelConfig(weights="imagenet"), 5, fusion=False)
    except UserError as err:
        assert "set model.weights to its PATH" in str(err)
    else:
        assert model.head[-1].out_features == 5


def test_weights_from_a_path_load_into_both_fusion_branches(tmp_path):
    donor = build_model(ModelConfig(), 5, fusion=False)
    path = tmp_path / "resnet18.pt"
    torch.save({"model": donor.trunk.state_dict()}, path)
    model = build_model(ModelConfig(weights=str(path)), 3, fusion=True)
    for branch in (model.visible, model.infrared):
        torch.testing.assert_close(branch.conv1.weight, donor.trunk.conv1.weight)
    assert model.head[-1].out_features == 3


def test_weights_path_that_is_not_resnet18_is_a_user_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="is not a ResNet-18 state_dict"):
        build_model(ModelConfig(weights=str(path)), 5, fusion=False)


def test_accumulation_clipping_bf16_and_channels_last_run_on_cpu(tmp_path, shards_small):
    """accum 2 halves the optimizer steps; bf16 autocast, clipping and channels_last all run."""
    run = train(tmp_path, shards_small, "train.batch_size=8", "train.accum_steps=2",
                "optim.grad_clip=1.0", "train.amp=bf16", "train.channels_last=on")
    summary = json.loads((run / "summary.json").read_text())
    n_train = summary["split_counts"]["train"]
    micro = -(-n_train // 8)
    assert summary["steps"] == -(-micro // 2)
    assert summary["global_batch"] == 16
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train_loss"] > 0 and sum(map(sum, record["val_confusion"])) == \
        summary["split_counts"]["val"]
