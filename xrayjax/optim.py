"""Config → optax optimizers and learning-rate schedules."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_prep import errors

# A schedule is evaluated on the host and its rate written into the optimizer state before each
# update (`with_learning_rate`), so the compiled step holds no schedule constant. Runs that
# differ only in their length or epochs (the per-class CycleGAN pair, a study's body parts)
# share one jitted step in a process; runs that also differ in their rates compile to the same
# program, which the persistent cache then serves.
Schedule = Callable[[int], np.float32]


def constant_then_linear_decay(lr: float, constant_steps: int, total_steps: int) -> Schedule:
    """lr for `constant_steps` updates, then linear decay reaching exactly 0 at the last update.

    The thesis keeps the rate for 10 epochs and decays it to zero over the rest (sec. 3.2.2.1).
    Updates are counted from 0, so the last one is `total_steps − 1` and uses a rate of exactly
    0. When the constant part covers the whole run there is no decay. Evaluated on the host,
    in float32.
    """
    if total_steps < 1:
        raise errors.InputError(f"total_steps must be at least 1, got {total_steps}")
    constant_steps = max(constant_steps, 0)
    decay_steps = total_steps - 1 - constant_steps
    rate = np.float32(lr)
    if decay_steps <= 0:
        return lambda count: rate
    last = total_steps - 1

    # XLA computed this schedule inside the step until 2026-12-05, dividing by the constant as
    # a multiplication by its float32 reciprocal; so does this, to the bit, so runs resumed
    # from checkpoints of that time go on as they would have.
    reciprocal = np.float32(1) / np.float32(decay_steps)

    def schedule(count: int) -> np.float32:
        # A fraction of the remaining updates, so the last update's rate is exactly 0 (a
        # difference of rates would round to ±1e-11 in float32).
        remaining = np.float32(last - count) * reciprocal
        return rate * np.clip(remaining, np.float32(0), np.float32(1))

    return schedule


class _RateState(NamedTuple):
    count: jax.Array  # updates so far: the layout a schedule's slot has in optax's state


class _WrittenRate:
    """inject_hyperparams' schedule slot for a rate written into the state by the host.

    Its value is the `learning_rate` passed to the update (the state's own, see `adam`), or
    `initial` at init; its state counts updates, as a plain schedule's does, so checkpoints
    keep the layout they had when the schedule ran inside the step.
    """

    def __init__(self, initial: float):
        self.initial = initial

    def init(self) -> _RateState:
        return _RateState(count=jnp.zeros([], jnp.int32))

    def update(self, state: _RateState, **extra_args) -> _RateState:
        return _RateState(count=optax.safe_increment(state.count))

    def __call__(self, state: _RateState, learning_rate=None, **extra_args):
        return self.initial if learning_rate is None else learning_rate


# Returns the same object for the same arguments, so engines built from equal configs compare
# equal, and a run reuses the step an earlier equal run compiled (parallel.py).
@functools.cache
def adam(
    lr: float, b1: float, b2: float, eps: float = 1e-8, *, scheduled: bool = False
) -> optax.GradientTransformation:
    """Adam whose learning rate lives in its state (readable for logging).

    With `scheduled`, a host-side schedule sets the rate before each update
    (`with_learning_rate`); the state keeps a schedule's update counter beside it.
    """
    if not scheduled:
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=b1, b2=b2, eps=eps)
    inner = optax.inject_hyperparams(optax.adam)(
        learning_rate=_WrittenRate(lr), b1=b1, b2=b2, eps=eps
    )

    def update(updates, state, params=None):
        return inner.update(updates, state, params, learning_rate=current_lr(state))

    return optax.GradientTransformation(inner.init, update)


def with_learning_rate(opt_state, lr: float):
    """`adam`'s state with the rate of its next update set to `lr` (placed like the old one)."""
    old = opt_state.hyperparams["learning_rate"]
    value = np.asarray(lr, old.dtype)
    new = value
    if isinstance(old, jax.Array):
        # Not device_put: across processes it checks that every process passes the same value,
        # a blocking collective each step; every process computes the same rate.
        new = jax.make_array_from_callback(old.shape, old.sharding, lambda _: value)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": new})


def current_lr(opt_state) -> float:
    """The learning rate of the latest update, from an inject_hyperparams optimizer state."""
    return opt_state.hyperparams["learning_rate"]
