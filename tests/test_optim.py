"""The constant-then-linear learning-rate schedule."""

import numpy as np
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


def test_scheduled_adam_applies_the_rate_written_into_its_state():
    import jax.numpy as jnp

    schedule = optim.constant_then_linear_decay(0.5, 1, 3)
    tx = optim.adam(0.5, b1=0.5, b2=0.999, scheduled=True)
    plain = optim.adam(1.0, b1=0.5, b2=0.999)  # its step, scaled by each rate below
    params, grads = {"w": jnp.ones(2)}, {"w": jnp.asarray([1.0, -3.0])}
    state, plain_state = tx.init(params), plain.init(params)
    assert float(optim.current_lr(state)) == 0.5  # before any write: the initial rate
    lrs = []
    for count in range(3):
        state = optim.with_learning_rate(state, schedule(count))
        updates, state = tx.update(grads, state, params)
        unit, plain_state = plain.update(grads, plain_state, params)
        lrs.append(float(optim.current_lr(state)))
        np.testing.assert_allclose(updates["w"], lrs[-1] * unit["w"], rtol=1e-6)
    assert lrs == [0.5, 0.5, 0.0]  # constant for 1 update, then down to 0 at the last
    # The layout a schedule run inside the step had: its own update counter beside the rate.
    assert int(state.hyperparams_states["learning_rate"].count) == 3


@pytest.mark.parametrize(
    "lr, constant, total", [(2e-4, 640, 1920), (2e-4, 660, 1980), (5e-5, 70, 220)]
)
def test_schedule_equals_the_one_compiled_into_the_step_before(lr, constant, total):
    """Until 2026-12-05 XLA computed the schedule inside the step; the host gives the same
    rates to the bit, so runs resumed from checkpoints of that time go on as they would have."""
    import jax
    import jax.numpy as jnp

    decay, last = total - 1 - constant, total - 1

    def in_step(count):  # the former in-graph schedule, verbatim
        remaining = jnp.clip((last - count) / decay, 0.0, 1.0)
        return lr * remaining

    compiled = np.asarray(jax.jit(jax.vmap(in_step))(jnp.arange(total, dtype=jnp.int32)))
    schedule = optim.constant_then_linear_decay(lr, constant, total)
    host = np.asarray([schedule(count) for count in range(total)])
    assert host.dtype == np.float32 and host[-1] == 0.0
    np.testing.assert_array_equal(host, compiled)
