"""LARS: layer-wise trust-ratio scaling of gradients, as a wrapper around any torch optimizer.

For each parameter p (gradient g, group weight decay wd, group learning rate lr):
  - p with at most one dimension (bias, norm scale) and exclusion on: g untouched, no weight decay;
  - otherwise ratio = tc * ||p|| / (||g|| + wd * ||p|| + eps) when ||p|| and ||g|| are both
    non-zero, else 1; in clip mode ratio = min(ratio / lr, 1); then g <- (g + wd * p) * ratio.
The wrapped optimizer then steps with its own weight decay held at 0 (decay already went into g);
the group's weight decay is restored afterwards, so param_groups and state_dict show the user's value.
The wrapper shares the wrapped optimizer's param_groups, state and defaults, so torch lr schedulers
drive it directly, and its state_dict is the wrapped one's plus the LARS settings (no functions).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fer_dist.config import OptimConfig
from fer_dist.errors import UserError

ADAPTIVE_WARNING = ("LARS wraps {name}: its per-coordinate scaling cancels most of the trust ratio; "
                    "LARS is meant for SGD")


class LARS(torch.optim.Optimizer):
    """Trust-ratio gradient scaling in front of `optimizer` (which does the actual update)."""

    def __init__(self, optimizer: torch.optim.Optimizer, trust_coefficient: float = 0.001,
                 eps: float = 1e-8, clip: bool = False, exclude_bias_and_norm: bool = True) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, LARS):
            raise TypeError(f"LARS wraps a torch optimizer, got {type(optimizer).__name__}")
        if trust_coefficient <= 0 or eps < 0:
            raise ValueError(f"LARS needs trust_coefficient > 0 and eps >= 0, "
                             f"got {trust_coefficient} and {eps}")
        if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            warnings.warn(ADAPTIVE_WARNING.format(name=type(optimizer).__name__), UserWarning,
                          stacklevel=2)
        self.optimizer = optimizer
        self.trust_coefficient = float(trust_coefficient)
        self.eps = float(eps)
        self.clip = bool(clip)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)
        self._init_hooks()

    def _init_hooks(self) -> None:
        # Optimizer.__init__ is not called (groups and state belong to the wrapped optimizer);
        # these are the hook tables its step machinery expects on every instance.
        for name in ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
                     "load_state_dict_pre", "load_state_dict_post"):
            setattr(self, f"_optimizer_{name}_hooks", OrderedDict())
        self._patch_step_function()

    # --- the wrapped optimizer's tables, shared rather than copied
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def __getstate__(self) -> dict[str, Any]:
        keep = ("optimizer", "trust_coefficient", "eps", "clip", "exclude_bias_and_norm")
        return {k: self.__dict__[k] for k in keep}   # like torch: no hooks, no patched step

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()

    def __repr__(self) -> str:
        return (f"LARS(trust_coefficient={self.trust_coefficient}, eps={self.eps}, clip={self.clip}, "
                f"exclude_bias_and_norm={self.exclude_bias_and_norm}) wrapping {self.optimizer!r}")

    # --- optimisation
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Rescale every gradient by its trust ratio, then step the wrapped optimizer without decay."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        saved = []
        for group in self.param_groups:
            wd = group.get("weight_decay", 0.0)
            saved.append(wd)
            for p in group["params"]:
                if p.grad is not None:
                    self._adapt(p, wd, group["lr"])
            if "weight_decay" in group:
                group["weight_decay"] = 0.0
        try:
            self.optimizer.step()
        finally:
            for group, wd in zip(self.param_groups, saved):
                if "weight_decay" in group:
                    group["weight_decay"] = wd
        return loss

    def _adapt(self, p: torch.Tensor, wd: float, lr: float | torch.Tensor) -> None:
        """g <- (g + wd p) * ratio in place, or nothing for an excluded bias/norm parameter."""
        if p.grad.is_sparse:
            raise RuntimeError("LARS does not support sparse gradients")
        if self.exclude_bias_and_norm and p.ndim <= 1:
            return
        g = p.grad
        p_norm = torch.linalg.vector_norm(p)
        g_norm = torch.linalg.vector_norm(g)
        ratio = self.trust_coefficient * p_norm / (g_norm + wd * p_norm + self.eps)
        ratio = torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
        if self.clip:
            ratio = torch.clamp(ratio / lr, max=1.0)   # lr 0 gives inf, clamped to 1
        g.add_(p, alpha=wd).mul_(ratio)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    # --- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state_dict plus a `lars` entry of plain numbers."""
        sd = self.optimizer.state_dict()
        sd["lars"] = {"trust_coefficient": self.trust_coefficient, "eps": self.eps,
                      "clip": self.clip, "exclude_bias_and_norm": self.exclude_bias_and_norm}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the wrapped optimizer and, like its hyper-parameters, the saved LARS settings."""
        sd = dict(state_dict)
        settings = sd.pop("lars", None)
        self.optimizer.load_state_dict(sd)
        if settings is not None:
            self.trust_coefficient = float(settings["trust_coefficient"])
            self.eps = float(settings["eps"])
            self.clip = bool(settings["clip"])
            self.exclude_bias_and_norm = bool(settings["exclude_bias_and_norm"])


def build_optimizer(params_or_model: nn.Module | Iterable[torch.Tensor], cfg: OptimConfig,
                    lr: float) -> torch.optim.Optimizer:
    """The configured sgd/adam/adamw at `lr`, wrapped in LARS when `cfg.lars`.

    Without LARS and with `cfg.exclude_bias_and_norm`, parameters of at most one dimension
    (biases, norm scales) go into a second group without weight decay (the usual practice);
    with LARS a single group is built, and LARS itself leaves those parameters undecayed.
    """
    source = params_or_model.parameters() if isinstance(params_or_model, nn.Module) else params_or_model
    params = [p for p in source if p.requires_grad]
    if not params:
        raise ValueError("build_optimizer: no trainable parameters")
    if not all(isinstance(p, torch.Tensor) for p in params):
        raise TypeError("build_optimizer takes a model or an iterable of tensors")
    wd = cfg.weight_decay
    if cfg.exclude_bias_and_norm and not cfg.lars:
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": params, "weight_decay": wd}]
    if cfg.name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise UserError(f"optim.nesterov = true needs optim.momentum > 0 (got {cfg.momentum}): "
                            "set a momentum or turn nesterov off")
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=wd)
    elif cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=lr, betas=(cfg.betas[0], cfg.betas[1]), weight_decay=wd)
    else:
        raise UserError(f"optim.name = {cfg.name!r} is not allowed; choose one of sgd, adam, adamw")
    if not cfg.lars:
        return opt
    return LARS(opt, trust_coefficient=cfg.trust_coefficient, eps=cfg.lars_eps,
                clip=cfg.lars_clip, exclude_bias_and_norm=cfg.exclude_bias_and_norm)
