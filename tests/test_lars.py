"""LARS maths against hand-computed values, and its behaviour as a torch optimizer."""
from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

from fer_dist.config import OptimConfig
from fer_dist.errors import UserError
from fer_dist.optim.lars import LARS, build_optimizer


def _param(values, grad) -> nn.Parameter:
    p = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


def _lars_sgd(params, lr, wd, **kw) -> LARS:
    return LARS(torch.optim.SGD(params, lr=lr, weight_decay=wd), **kw)


# Worked example used below: p = [[3, 4]] (||p|| = 5), g = [[6, 8]] (||g|| = 10), wd = 0.5, tc = 0.1
# ratio = 0.1 * 5 / (10 + 0.5 * 5) = 0.04;  g' = (g + 0.5 p) * 0.04 = [7.5, 10] * 0.04 = [0.3, 0.4]

def test_trust_ratio_matches_hand_computation():
    p = _param([[3.0, 4.0]], [[6.0, 8.0]])
    opt = _lars_sgd([p], lr=1.0, wd=0.5, trust_coefficient=0.1, eps=0.0)
    opt.step()
    assert torch.allclose(p.grad, torch.tensor([[0.3, 0.4]], dtype=torch.float64), atol=1e-12)
    # the wrapped SGD must not decay again: with decay it would be p - (g' + 0.5 p) = [[1.2, 1.6]]
    assert torch.allclose(p.data, torch.tensor([[2.7, 3.6]], dtype=torch.float64), atol=1e-12)
    assert opt.param_groups[0]["weight_decay"] == 0.5
    assert opt.state_dict()["param_groups"][0]["weight_decay"] == 0.5


def test_eps_enters_the_denominator():
    p = _param([[3.0, 4.0]], [[6.0, 8.0]])
    opt = _lars_sgd([p], lr=1.0, wd=0.5, trust_coefficient=0.1, eps=2.5)
    opt.step()
    ratio = 0.1 * 5 / (10 + 2.5 + 2.5)          # 1/30
    assert torch.allclose(p.grad, torch.tensor([[7.5, 10.0]], dtype=torch.float64) * ratio)


def test_one_dimensional_params_are_excluded_without_decay():
    bias = _param([3.0, 4.0], [6.0, 8.0])
    opt = _lars_sgd([bias], lr=1.0, wd=0.5, trust_coefficient=0.1, eps=0.0)
    opt.step()
    assert torch.equal(bias.grad, torch.tensor([6.0, 8.0], dtype=torch.float64))
    assert torch.equal(bias.data, torch.tensor([-3.0, -4.0], dtype=torch.float64))


def test_one_dimensional_params_adapted_when_exclusion_off():
    bias = _param([3.0, 4.0], [6.0, 8.0])
    opt = _lars_sgd([bias], lr=1.0, wd=0.5, trust_coefficient=0.1, eps=0.0,
                    exclude_bias_and_norm=False)
    opt.step()
    assert torch.allclose(bias.data, torch.tensor([2.7, 3.6], dtype=torch.float64), atol=1e-12)


def test_zero_weight_norm_gives_ratio_one():
    p = _param([[0.0, 0.0]], [[1.0, 2.0]])
    _lars_sgd([p], lr=1.0, wd=0.5, trust_coefficient=0.1).step()
    assert torch.equal(p.grad, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    assert torch.equal(p.data, torch.tensor([[-1.0, -2.0]], dtype=torch.float64))


def test_zero_grad_norm_gives_ratio_one_and_plain_decay():
    p = _param([[3.0, 4.0]], [[0.0, 0.0]])
    _lars_sgd([p], lr=1.0, wd=0.5, trust_coefficient=0.1).step()
    assert torch.equal(p.grad, torch.tensor([[1.5, 2.0]], dtype=torch.float64))
    assert torch.equal(p.data, torch.tensor([[1.5, 2.0]], dtype=torch.float64))


@pytest.mark.parametrize("lr, expected_ratio", [(0.1, 0.4), (0.01, 1.0), (0.0, 1.0)])
def test_clip_mode(lr, expected_ratio):
    # ratio 0.04: lr 0.1 -> min(0.4, 1) = 0.4; lr 0.01 -> min(4, 1) = 1; lr 0 -> min(inf, 1) = 1
    p = _param([[3.0, 4.0]], [[6.0, 8.0]])
    _lars_sgd([p], lr=lr, wd=0.5, trust_coefficient=0.1, eps=0.0, clip=True).step()
    g = torch.tensor([[7.5, 10.0]], dtype=torch.float64) * expected_ratio
    assert torch.allclose(p.grad, g, atol=1e-12)
    assert torch.allclose(p.data, torch.tensor([[3.0, 4.0]], dtype=torch.float64) - lr * g, atol=1e-12)


def test_momentum_sgd_matches_reference_over_steps():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = LARS(torch.optim.SGD([w, b], lr=0.5, momentum=0.9, weight_decay=0.01),
               trust_coefficient=0.02, eps=1e-8)
    ref_w, ref_b = w.detach().clone(), b.detach().clone()
    buf_w = buf_b = None
    for _ in range(3):
        gw, gb = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        ratio = 0.02 * ref_w.norm() / (gw.norm() + 0.01 * ref_w.norm() + 1e-8)
        aw = (gw + 0.01 * ref_w) * ratio
        buf_w = aw if buf_w is None else 0.9 * buf_w + aw
        buf_b = gb if buf_b is None else 0.9 * buf_b + gb
        ref_w, ref_b = ref_w - 0.5 * buf_w, ref_b - 0.5 * buf_b
    assert torch.allclose(w.data, ref_w, atol=1e-12)
    assert torch.allclose(b.data, ref_b, atol=1e-12)


def test_closure_is_evaluated_and_its_gradient_used():
    p = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    opt = _lars_sgd([p], lr=1.0, wd=0.5, trust_coefficient=0.1, eps=0.0)

    def closure():
        opt.zero_grad()
        loss = (p * torch.tensor([[6.0, 8.0]], dtype=torch.float64)).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 50.0
    assert torch.allclose(p.data, torch.tensor([[2.7, 3.6]], dtype=torch.float64), atol=1e-12)


def test_shares_groups_state_and_zero_grad_with_wrapped():
    p = _param([[3.0, 4.0]], [[6.0, 8.0]])
    inner = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    opt = LARS(inner)
    assert opt.param_groups is inner.param_groups and opt.defaults is inner.defaults
    opt.step()
    assert opt.state is inner.state and "momentum_buffer" in opt.state[p]
    opt.zero_grad()
    assert p.grad is None


def _lr_after(scheduler_factory, steps: int) -> list[float]:
    p = _param([[3.0, 4.0]], [[6.0, 8.0]])
    inner = torch.optim.SGD([p], lr=1.0)
    opt = LARS(inner)
    sched = scheduler_factory(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # e.g. "scheduler.step() before optimizer.step()"
        for _ in range(steps):
            opt.step()
            sched.step()
            lrs.append(inner.param_groups[0]["lr"])
    return lrs


def test_works_with_lambda_lr():
    lrs = _lr_after(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (s + 1)), 3)
    assert lrs == pytest.approx([1 / 2, 1 / 3, 1 / 4])


def test_works_with_cosine_annealing_lr():
    lrs = _lr_after(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4), 4)
    expected = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 5)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def _model_and_lars(tc: float = 0.02) -> tuple[nn.Module, LARS]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = LARS(torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3),
               trust_coefficient=tc, clip=True)
    return model, opt


def _train(model: nn.Module, opt: LARS, batches) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 4, generator=gen), torch.randint(0, 2, (8,), generator=gen))
               for _ in range(4)]
    model, opt = _model_and_lars()
    _train(model, opt, batches[:2])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optim"]["lars"] == {"trust_coefficient": 0.02, "eps": 1e-8, "clip": True,
                                      "exclude_bias_and_norm": True}

    resumed, fresh = _model_and_lars(tc=0.5)        # different settings: the checkpoint's win
    resumed.load_state_dict(saved["model"])
    fresh.load_state_dict(saved["optim"])
    assert fresh.trust_coefficient == 0.02 and fresh.clip is True
    _train(model, opt, batches[2:])
    _train(resumed, fresh, batches[2:])
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_param_groups_hold_no_functions():
    _, opt = _model_and_lars()
    sd = opt.state_dict()
    values = [v for g in sd["param_groups"] for v in g.values()] + list(sd["lars"].values())
    assert not any(callable(v) for v in values)


def test_deepcopy_keeps_settings_and_steps():
    p = _param([[3.0, 4.0]], [[6.0, 8.0]])
    clone = copy.deepcopy(_lars_sgd([p], lr=1.0, wd=0.5, trust_coefficient=0.1, eps=0.0))
    q = clone.param_groups[0]["params"][0]
    assert q is not p
    q.grad = torch.tensor([[6.0, 8.0]], dtype=torch.float64)
    clone.step()
    assert torch.allclose(q.data, torch.tensor([[2.7, 3.6]], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_wrapping_adaptive_optimizers_warns(cls):
    with pytest.warns(UserWarning, match="cancels most of the trust ratio"):
        LARS(cls([nn.Parameter(torch.ones(2, 2))], lr=1e-3))


def test_wrapping_sgd_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LARS(torch.optim.SGD([nn.Parameter(torch.ones(2, 2))], lr=0.1))


def test_rejects_non_optimizers_and_bad_settings():
    with pytest.raises(TypeError):
        LARS([nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match="trust_coefficient"):
        LARS(torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1), trust_coefficient=0.0)


# --- build_optimizer

def _small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_build_sgd_without_lars_splits_decay_groups():
    cfg = OptimConfig(name="sgd", momentum=0.8, nesterov=True, weight_decay=1e-3)
    opt = build_optimizer(_small_model(), cfg, lr=0.2)
    assert type(opt) is torch.optim.SGD
    decay, no_decay = opt.param_groups
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 1e-3
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) == 2 and len(no_decay["params"]) == 4
    assert decay["lr"] == 0.2 and decay["momentum"] == 0.8 and decay["nesterov"] is True


def test_build_without_exclusion_decays_everything():
    cfg = OptimConfig(name="adamw", betas=[0.8, 0.9], weight_decay=0.05, exclude_bias_and_norm=False)
    opt = build_optimizer(_small_model(), cfg, lr=1e-3)
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.9) and group["weight_decay"] == 0.05 and len(group["params"]) == 6


def test_build_lars_wraps_one_group():
    cfg = OptimConfig(name="sgd", lars=True, trust_coefficient=0.01, lars_eps=1e-6, lars_clip=True)
    opt = build_optimizer(_small_model(), cfg, lr=0.1)
    assert isinstance(opt, LARS) and type(opt.optimizer) is torch.optim.SGD
    assert (opt.trust_coefficient, opt.eps, opt.clip, opt.exclude_bias_and_norm) == (0.01, 1e-6, True, True)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == cfg.weight_decay


def test_build_lars_over_adam_warns():
    with pytest.warns(UserWarning, match="Adam"):
        opt = build_optimizer(_small_model(), OptimConfig(name="adam", lars=True), lr=1e-3)
    assert type(opt.optimizer) is torch.optim.Adam


def test_build_rejects_nesterov_without_momentum():
    with pytest.raises(UserError, match="optim.nesterov"):
        build_optimizer(_small_model(), OptimConfig(nesterov=True, momentum=0.0), lr=0.1)
