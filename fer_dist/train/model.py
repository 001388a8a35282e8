"""ResNet-18 classifiers: one branch per modality, logits out (the loss applies the softmax).

The study put a softmax inside the model and another in the loss; this model returns raw logits.
`fusion` is the study's feature-level fusion: a visible and an infrared trunk whose pooled 512-d
features (optionally gated by a sigmoid, the study's "attention") are concatenated into one head.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from fer_dist.config import ModelConfig
from fer_dist.errors import UserError


class FeatureGate(nn.Module):
    """x * sigmoid(W x + b): a per-feature gate on pooled features."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.proj(x))


class SingleModel(nn.Module):
    """One ResNet-18; forward takes [images] so both models share the calling convention."""

    def __init__(self, trunk: nn.Module, num_classes: int, dropout: float):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.trunk(images[0]))


class FusionModel(nn.Module):
    """Two ResNet-18 trunks (visible, infrared) -> [gate] -> concat 1024-d -> linear head."""

    def __init__(self, visible: nn.Module, infrared: nn.Module, num_classes: int, gate: bool,
                 dropout: float):
        super().__init__()
        self.visible, self.infrared = visible, infrared
        self.gate_visible = FeatureGate(512) if gate else nn.Identity()
        self.gate_infrared = FeatureGate(512) if gate else nn.Identity()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(1024, num_classes))

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        v = self.gate_visible(self.visible(images[0]))
        i = self.gate_infrared(self.infrared(images[1]))
        return self.head(torch.cat([v, i], dim=1))


def _trunk(weights: str) -> nn.Module:
    """A ResNet-18 without its classifier (fc -> Identity), 512-d pooled features out."""
    if weights == "imagenet":
        try:
            net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        except Exception as err:  # no network / no cache: torchvision raises URLError, RuntimeError...
            raise UserError(
                "model.weights = imagenet: could not fetch the ImageNet ResNet-18 weights "
                f"({type(err).__name__}: {err}). On an offline machine download resnet18-f37072fd.pth "
                "elsewhere and set model.weights to its PATH") from None
    else:
        net = resnet18(weights=None)
        if weights != "none":
            _load_trunk_weights(net, Path(weights))
    net.fc = nn.Identity()
    return net


def _load_trunk_weights(net: nn.Module, path: Path) -> None:
    """Load a torchvision-layout ResNet-18 state_dict from PATH (the classifier is re-initialised)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"model.weights: cannot read {path} as a state_dict ({err})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise UserError(f"model.weights: {path} is not a ResNet-18 state_dict "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def build_model(cfg: ModelConfig, num_classes: int, fusion: bool) -> nn.Module:
    """The configured classifier: forward(list of image batches) -> logits [B, num_classes]."""
    if fusion:
        return FusionModel(_trunk(cfg.weights), _trunk(cfg.weights), num_classes, cfg.gate,
                           cfg.dropout)
    return SingleModel(_trunk(cfg.weights), num_classes, cfg.dropout)
