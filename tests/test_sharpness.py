"""Keskar epsilon-sharpness: the box, the projection, eval-mode BatchNorm, and a real trained run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from fer_dist.cli import main
from fer_dist.config import ModelConfig
from fer_dist.report.sharpness import Probe, epsilon_sharpness, subset_loss
from fer_dist.train.model import build_model


class Linear2(nn.Module):
    """logits = W x + b on the first image tensor (flattened): a model with a known maximum."""

    def __init__(self, features: int):
        super().__init__()
        self.fc = nn.Linear(features, 2)

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(images[0].flatten(1))


def test_the_ascent_reaches_the_box_corner_of_a_monotone_loss():
    # one positive input of class 0: the loss falls with every class-0 weight and rises with every
    # class-1 weight anywhere, so the maximum in the box is the corner w - box (row 0), w + box (row 1)
    torch.manual_seed(0)
    model = Linear2(3)
    x = torch.tensor([[0.5, 1.0, 2.0]])
    probe = Probe([x], torch.tensor([0]))
    w, b = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    eps = 0.05
    direction = torch.tensor([[-1.0], [1.0]])
    w_corner = w + direction * eps * (w.abs() + 1)
    b_corner = b + direction.squeeze(1) * eps * (b.abs() + 1)
    with torch.no_grad():
        corner_loss = float(nn.functional.cross_entropy(x @ w_corner.T + b_corner, torch.tensor([0])))
        loss0 = float(nn.functional.cross_entropy(model([x]), torch.tensor([0])))

    result = epsilon_sharpness(model, probe, eps, steps=4)
    assert result["loss0"] == pytest.approx(loss0, rel=1e-6)
    assert result["max_loss"] == pytest.approx(corner_loss, rel=1e-6)
    assert result["value"] == pytest.approx(100 * (corner_loss - loss0) / (1 + loss0), rel=1e-6)
    # the model is left exactly as it was
    assert torch.equal(model.fc.weight, w) and torch.equal(model.fc.bias, b)
    # more steps cannot leave the box: the corner is still the maximum
    assert epsilon_sharpness(model, probe, eps, steps=25)["max_loss"] == pytest.approx(corner_loss,
                                                                                        rel=1e-6)


def small_resnet_probe() -> tuple[nn.Module, Probe]:
    torch.manual_seed(1)
    model = build_model(ModelConfig(), num_classes=3, fusion=False)
    images = torch.randn(12, 3, 32, 32)
    labels = torch.arange(12) % 3
    probe = Probe([images], labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(15):                       # fit the 12 images a little: a (rough) minimum
        opt.zero_grad()
        nn.functional.cross_entropy(model([images]), labels).backward()
        opt.step()
    return model, probe


def test_resnet18_sharpness_is_zero_at_epsilon_zero_and_grows_with_epsilon():
    model, probe = small_resnet_probe()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero = epsilon_sharpness(model, probe, 0.0, steps=3)
    assert zero["value"] == 0.0 and zero["max_loss"] == zero["loss0"]
    values = [epsilon_sharpness(model, probe, eps, steps=3)["value"] for eps in (1e-4, 1e-3, 1e-2)]
    assert 0 < values[0] < values[1] < values[2]
    # weights and BatchNorm running statistics are untouched (eval mode, weights restored)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert subset_loss(model, probe, grad=False) == pytest.approx(zero["loss0"], rel=1e-6)


def test_bad_arguments_are_rejected():
    model, probe = Linear2(3), Probe([torch.ones(1, 3)], torch.tensor([0]))
    with pytest.raises(ValueError):
        epsilon_sharpness(model, probe, -1e-3, steps=3)
    with pytest.raises(ValueError):
        epsilon_sharpness(model, probe, 1e-3, steps=0)


# ----------------------------------------------------------------------------- a real trained run

@pytest.fixture
def trained_run(tmp_path, shards_small) -> Path:
    """Two epochs of real training (in-process, one rank) on the shared synthetic shards."""
    tmp = tmp_path / "sharp"
    tmp.mkdir()
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "out_dir": str(tmp / "runs"), "data": {"shards": str(shards_small)},
        "optim": {"name": "adam", "lr": 1e-3, "scale_lr": "none", "schedule": "none"},
        "train": {"epochs": 2}}))
    sets = ["data.image_size=32", "train.batch_size=16", "train.threads=1", "data.loader_workers=0",
            "train.device=cpu"]
    assert main(["train", "--config", str(config), *(a for s in sets for a in ("--set", s))]) == 0
    return tmp / "runs" / "tiny"


def test_sharpness_of_a_trained_run_is_stored_and_reported(trained_run, capsys):
    summary_path = trained_run / "summary.json"
    before = json.loads(summary_path.read_text())
    values = {}
    for eps in ("0", "1e-3", "1e-2"):
        assert main(["sharpness", str(trained_run), "--epsilon", eps, "--steps", "3",
                     "--samples", "24", "--seed", "1"]) == 0
        stored = json.loads(summary_path.read_text())["sharpness"]
        assert stored["epsilon"] == float(eps) and stored["steps"] == 3 and stored["samples"] == 24
        assert stored["value"] == pytest.approx(100 * (stored["max_loss"] - stored["loss0"])
                                                / (1 + stored["loss0"]))
        values[eps] = stored["value"]
    assert values["0"] == 0.0 and 0 < values["1e-3"] < values["1e-2"]
    after = json.loads(summary_path.read_text())
    assert {k: v for k, v in after.items() if k != "sharpness"} == before    # other keys kept
    assert not list(trained_run.glob(".summary.json*"))                      # no temporary left
    # the same seed gives the same subset and the same figure
    assert main(["sharpness", str(trained_run), "--epsilon", "1e-2", "--steps", "3",
                 "--samples", "24", "--seed", "1"]) == 0
    assert json.loads(summary_path.read_text())["sharpness"]["value"] == pytest.approx(values["1e-2"])

    capsys.readouterr()
    out = trained_run / "rep"
    assert main(["report", str(trained_run), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["runs"]["tiny"]["numbers"]["sharpness"] == pytest.approx(values["1e-2"])
    assert f"(ε=0.01)" in (out / "report.md").read_text()
    assert math.isfinite(report["runs"]["tiny"]["numbers"]["test_acc"])


def test_sharpness_cli_errors_name_the_file(tmp_path, capsys):
    assert main(["sharpness", str(tmp_path / "missing")]) == 2
    assert f"run directory {tmp_path / 'missing'} not found" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    assert main(["sharpness", str(run), "--epsilon", "-1"]) == 2
    assert "--epsilon -1.0 must be >= 0" in capsys.readouterr().err
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r", "data": {"shards": "gone"}}))
    assert main(["sharpness", str(run), "--shards", str(tmp_path / "moved")]) == 2
    assert f"data.shards = '{tmp_path / 'moved'}'" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    assert main(["sharpness", str(bare)]) == 2
    assert f"{bare / 'config.yaml'} not found" in capsys.readouterr().err
