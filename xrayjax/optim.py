"""Config → optax optimizers and learning-rate schedules."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import optax

from data_prep import errors


# Both builders return the same object for the same arguments, so engines built from equal
# configs compare equal, and a run reuses the step an earlier equal run compiled (parallel.py).
@functools.cache
def constant_then_linear_decay(lr: float, constant_steps: int, total_steps: int) -> optax.Schedule:
    """lr for `constant_steps` updates, then linear decay reaching exactly 0 at the last update.

    The thesis keeps the rate for 10 epochs and decays it to zero over the rest (sec. 3.2.2.1).
    Updates are counted from 0, so the last one is `total_steps − 1` and uses a rate of exactly
    0. When the constant part covers the whole run there is no decay.
    """
    if total_steps < 1:
        raise errors.InputError(f"total_steps must be at least 1, got {total_steps}")
    constant_steps = max(constant_steps, 0)
    decay_steps = total_steps - 1 - constant_steps
    if decay_steps <= 0:
        return optax.constant_schedule(lr)
    last = total_steps - 1

    def schedule(count):
        # A fraction of the remaining updates, so the last update's rate is exactly 0 (a
        # difference of rates would round to ±1e-11 in float32).
        remaining = jnp.clip((last - count) / decay_steps, 0.0, 1.0)
        return lr * remaining

    return schedule


@functools.cache
def adam(
    schedule: optax.Schedule | float, b1: float, b2: float, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam whose learning rate is readable from the state (for logging)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=b1, b2=b2, eps=eps)


def current_lr(opt_state) -> float:
    """The learning rate of the latest update, from an inject_hyperparams optimizer state."""
    return opt_state.hyperparams["learning_rate"]
