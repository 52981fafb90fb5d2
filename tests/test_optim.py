"""The constant-then-linear learning-rate schedule."""

import pytest

from xrayjax import optim


def test_schedule_start_boundary_and_end():
    # 30 epochs of 10 steps, constant for 10 epochs (thesis).
    schedule = optim.constant_then_linear_decay(2e-4, constant_steps=100, total_steps=300)
    assert float(schedule(0)) == pytest.approx(2e-4)
    assert float(schedule(99)) == pytest.approx(2e-4)
    assert float(schedule(100)) == pytest.approx(2e-4)
    assert float(schedule(101)) < 2e-4
    assert float(schedule(200)) == pytest.approx(2e-4 * (299 - 200) / 199)
    assert float(schedule(299)) == 0.0  # the last update
    assert float(schedule(298)) > 0.0


def test_schedule_without_decay_and_errors():
    schedule = optim.constant_then_linear_decay(1e-3, constant_steps=50, total_steps=20)
    assert float(schedule(19)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="total_steps"):
        optim.constant_then_linear_decay(1e-3, 0, 0)


def test_adam_exposes_learning_rate():
    import jax.numpy as jnp

    tx = optim.adam(optim.constant_then_linear_decay(0.5, 1, 3), b1=0.5, b2=0.999)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    lrs = []
    for _ in range(3):
        _, state = tx.update({"w": jnp.ones(2)}, state, params)
        lrs.append(float(optim.current_lr(state)))
    assert lrs == [pytest.approx(0.5), pytest.approx(0.5), 0.0]
