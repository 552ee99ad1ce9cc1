"""The training core: the schedule, the weight average, the step, the loop, the guards."""

from __future__ import annotations

import math

import pytest
import torch

from scorefield.fit import EMA, EarlyStopping, LossWindow, Trainer, fit, warmup_schedule


def _linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def _lrs(optimizer, schedule, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return out


def test_warmup_schedule_is_linear_then_constant_and_resumes_where_it_stopped():
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    assert _lrs(opt, warmup_schedule(opt, 4), 6) == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    whole = _lrs(opt, warmup_schedule(opt, 10), 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    first = _lrs(opt, warmup_schedule(opt, 10), 3)
    state = opt.state_dict()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt.load_state_dict(state)
    assert first + _lrs(opt, warmup_schedule(opt, 10, last_step=2), 5) == whole
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    assert _lrs(opt, warmup_schedule(opt, 0), 2) == [0.02, 0.02]


def test_ema_is_the_exponential_average_with_a_warm_up():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(step=0)  # decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.state_dict(model)["weight"], 0.1 * start + 0.9 * (start + 1))
    ema.update(step=100)  # decay 0.9
    expected = 0.9 * (0.1 * start + 0.9 * (start + 1)) + 0.1 * (start + 1)
    assert torch.allclose(ema.state_dict(model)["weight"], expected)
    averaged = ema.averaged(model)
    assert torch.equal(averaged.weight, ema.state_dict(model)["weight"]) and not averaged.weight.requires_grad
    plain = EMA(model, decay=0.9, warmup=False)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    plain.update(step=0)
    assert torch.allclose(plain.state_dict(model)["weight"], before + 0.1)
    assert EMA.decay_for_horizon(1000) == pytest.approx(0.999)


def test_a_step_clips_the_gradient_and_reports_its_norm_before_clipping():
    model = _linear()
    x = torch.ones(4, 3)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), grad_clip=0.5)
    loss = (100 * model(x)).square().mean()
    norm = trainer.step(loss)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(norm) > 0.5 and grads.norm().item() == pytest.approx(0.5, rel=1e-5)
    assert trainer.step_count == 1 and torch.equal(trainer.last_grad_norm, norm)
    assert math.isnan(float(Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0)).step(model(x).sum())))


def test_fit_minimises_continues_from_its_step_and_stops_when_asked():
    model = _linear()
    target = torch.tensor([[1.0, -2.0, 0.5]])
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    y = x @ target.T
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05))
    seen = []

    def after(done, loss, bar):
        seen.append(done)
        return done == 150

    assert fit(trainer, lambda k: (model(x) - y).square().mean(), 1000, after) == 150
    assert seen == list(range(1, 151))
    assert fit(trainer, lambda k: (model(x) - y).square().mean(), 600) == 600
    torch.testing.assert_close(model.weight.detach(), target, atol=1e-3, rtol=0)


def test_early_stopping_keeps_the_best_state_and_counts_patience():
    values = iter([3.0, 2.0, 2.0, 1.0, 1.5, 1.2, 1.1, 0.5])
    state = {"w": torch.zeros(1)}
    stopper = EarlyStopping(lambda: next(values), lambda: {"w": state["w"].clone()}, patience=3)
    stops = []
    for step in range(1, 9):
        state["w"] += 1
        stops.append(stopper.check(step))
    assert stops == [False, False, False, False, False, False, True, False]
    assert stopper.best == 0.5 and float(stopper.best_state["w"]) == 8
    assert [s for s, _ in stopper.curve] == list(range(1, 9))


def test_loss_window_finds_the_first_non_finite_step():
    window = LossWindow(start=10)
    for value in (1.0, 2.0, float("nan"), float("inf")):
        window.add(torch.tensor(value))
    assert window.first_non_finite() == 13
    window.reset(14)
    window.add(torch.tensor(1.0))
    window.add(torch.tensor(3.0))
    assert window.first_non_finite() is None and window.mean() == 2.0
