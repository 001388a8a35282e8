"""Optimisation: the LARS wrapper, the optimizer factory and the per-step lr schedule."""
from fer_dist.optim.lars import LARS, build_optimizer
from fer_dist.optim.schedule import LRSchedule, scaled_lr

__all__ = ["LARS", "build_optimizer", "LRSchedule", "scaled_lr"]
