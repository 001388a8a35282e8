"""Learning-rate scaling and the per-step schedule against its closed form."""
from __future__ import annotations

import math
import pickle

import pytest
import torch

from fer_dist.config import OptimConfig
from fer_dist.errors import UserError
from fer_dist.optim.schedule import LRSchedule, scaled_lr


def test_scaled_lr_linear_and_none():
    assert scaled_lr(0.1, 512, "linear") == pytest.approx(0.2)
    assert scaled_lr(0.1, 64, "linear") == pytest.approx(0.025)
    assert scaled_lr(0.1, 512, "none") == 0.1
    with pytest.raises(ValueError):
        scaled_lr(0.1, 0, "linear")
    with pytest.raises(ValueError):
        scaled_lr(0.1, 64, "sqrt")


def test_closed_form_values_at_chosen_steps():
    s = LRSchedule(base_lr=1.0, total_steps=14, warmup_steps=4, kind="cosine", min_lr=0.2)
    # warm-up: (step + 1) / 4
    assert [s(k) for k in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # cosine over T = 10 steps: t = 0 -> 1.0, t = 5 -> midpoint 0.6, t = 10 -> 0.2
    assert s(4) == pytest.approx(1.0)
    assert s(9) == pytest.approx(0.6)
    assert s(6) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 2 / 10)))
    assert s(14) == pytest.approx(0.2)
    assert s(100) == pytest.approx(0.2)          # clamped after the end


def test_warmup_ends_at_base_and_cosine_decreases():
    s = LRSchedule(base_lr=0.4, total_steps=50, warmup_steps=10, kind="cosine")
    assert s(9) == pytest.approx(0.4) and s(8) < 0.4
    values = [s(k) for k in range(9, 51)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-15)


def test_none_is_constant_after_warmup():
    s = LRSchedule(base_lr=0.3, total_steps=20, warmup_steps=3, kind="none", min_lr=0.1)
    assert [s(k) for k in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert {s(k) for k in range(3, 40)} == {0.3}


def test_no_warmup_starts_at_base():
    s = LRSchedule(base_lr=0.5, total_steps=8)
    assert s(0) == 0.5 and s(4) == pytest.approx(0.25)


def test_resumed_schedule_equals_original():
    original = LRSchedule(base_lr=0.8, total_steps=37, warmup_steps=5, kind="cosine", min_lr=0.01)
    before = [original(k) for k in range(37)]
    resumed = pickle.loads(pickle.dumps(original))
    rebuilt = LRSchedule(base_lr=0.8, total_steps=37, warmup_steps=5, kind="cosine", min_lr=0.01)
    assert resumed == original
    assert [rebuilt(k) for k in range(17, 37)] == before[17:]
    assert [resumed(k) for k in range(17, 37)] == before[17:]


def test_apply_sets_every_group():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 5.0}], lr=1.0)
    s = LRSchedule(base_lr=1.0, total_steps=10, warmup_steps=4)
    assert s.apply(opt, 1) == 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]


def test_invalid_schedules_rejected():
    with pytest.raises(ValueError):
        LRSchedule(base_lr=1.0, total_steps=5, warmup_steps=6)
    with pytest.raises(ValueError):
        LRSchedule(base_lr=1.0, total_steps=5, kind="step")
    with pytest.raises(ValueError):
        LRSchedule(base_lr=1.0, total_steps=5)(-1)


def test_from_config_counts_steps_and_names_bad_keys():
    s = LRSchedule.from_config(OptimConfig(warmup_epochs=1.5, min_lr=0.01), base_lr=0.2,
                               steps_per_epoch=10, epochs=4)
    assert (s.total_steps, s.warmup_steps, s.kind, s.min_lr) == (40, 15, "cosine", 0.01)
    with pytest.raises(UserError, match="optim.warmup_epochs"):
        LRSchedule.from_config(OptimConfig(warmup_epochs=5), 0.2, steps_per_epoch=10, epochs=4)
    with pytest.raises(UserError, match="optim.min_lr"):
        LRSchedule.from_config(OptimConfig(min_lr=0.5), 0.2, steps_per_epoch=10, epochs=4)
