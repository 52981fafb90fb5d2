"""The classifier's pure steps: loss values, the epoch tally, padding, equality across devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xrayjax import losses, optim, parallel
from xrayjax.models.classifier import ResNetClassifier
from xrayjax.steps.classifier import ClassifierEngine

SIZE = 32


def _engine(steps_per_epoch=3, lr=0.01):
    return ClassifierEngine(
        model=ResNetClassifier(width=4, num_modules=2),
        tx=optim.adam(lr, 0.9, 0.999),
        steps_per_epoch=steps_per_epoch,
    )


def _batches(n, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.uniform(-1, 1, (batch, SIZE, SIZE, 1)).astype(np.float32),
            "label": rng.integers(0, 2, batch).astype(np.int32),
        }
        for _ in range(n)
    ]


def _run(engine, devices, batches):
    mesh = parallel.make_mesh(devices)
    init = jax.jit(lambda key: engine.init(key, (SIZE, SIZE, 1)))
    state = parallel.replicate(mesh, init(jax.random.PRNGKey(0)))
    step = parallel.jit_step(engine.train_step, mesh, state)
    history = []
    for batch in batches:
        state, metrics = step(state, parallel.global_batch_array(mesh, batch))
        history.append(parallel.fetch(metrics))
    return parallel.fetch(state), history


def test_one_and_four_devices_give_the_same_losses():
    assert jax.device_count() == 4
    engine = _engine()
    batches = _batches(4)
    state1, one = _run(engine, jax.devices()[:1], batches)
    state4, four = _run(engine, jax.devices(), batches)
    for m1, m4 in zip(one, four, strict=True):
        for key in ("loss", "accuracy", "batch_accuracy", "lr"):
            np.testing.assert_allclose(m1[key], m4[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # Batch-norm running statistics come from the global batch on both meshes.
    stats1, stats4 = jax.tree.leaves(state1.batch_stats), jax.tree.leaves(state4.batch_stats)
    for a, b in zip(stats1, stats4, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert one[0]["loss"] != one[-1]["loss"]  # the step does something


def test_first_loss_is_the_cross_entropy_of_the_initial_model():
    engine = _engine()
    batch = _batches(1)[0]
    state = engine.init(jax.random.PRNGKey(0), (SIZE, SIZE, 1))
    logits, _ = engine.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        batch["image"],
        train=True,
        mutable=["batch_stats"],
    )
    # Hand-computed mean of −log softmax[label].
    log_p = jax.nn.log_softmax(logits)
    expected = -np.mean(np.asarray(log_p)[np.arange(8), batch["label"]])
    _, metrics = jax.jit(engine.train_step)(state, batch)
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(
        float(losses.cross_entropy(logits, jnp.asarray(batch["label"]))), rel=1e-6
    )
    predicted = np.argmax(np.asarray(logits), -1)
    assert float(metrics["batch_accuracy"]) == np.mean(predicted == batch["label"])
    assert float(metrics["lr"]) == pytest.approx(0.01)


def test_accuracy_runs_over_the_epoch_and_resets():
    engine = _engine(steps_per_epoch=2, lr=0.0)  # lr 0: predictions change only through BN
    batches = _batches(4, seed=3)
    state = engine.init(jax.random.PRNGKey(0), (SIZE, SIZE, 1))
    step = jax.jit(engine.train_step)
    history = []
    for batch in batches:
        state, metrics = step(state, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    b = [h["batch_accuracy"] for h in history]
    assert history[0]["accuracy"] == b[0]
    assert history[1]["accuracy"] == pytest.approx((b[0] + b[1]) / 2)  # equal batch sizes
    assert history[2]["accuracy"] == b[2]  # a new epoch starts the tally again
    assert history[3]["accuracy"] == pytest.approx((b[2] + b[3]) / 2)
    assert int(state.step) == 4 and list(np.asarray(state.epoch_tally))[1] == 16


def test_eval_step_gives_probabilities_independent_of_batch_mates():
    engine = _engine()
    state, _ = _run(engine, jax.devices(), _batches(2))
    rng = np.random.default_rng(5)
    images = rng.uniform(-1, 1, (8, SIZE, SIZE, 1)).astype(np.float32)
    batch = {"image": images, "valid": np.arange(8) < 5, "index": np.arange(8, dtype=np.int32)}
    out = jax.jit(engine.eval_step)(state, batch)
    assert out["probability"].shape == (8,)
    assert np.all((out["probability"] >= 0) & (out["probability"] <= 1))
    np.testing.assert_array_equal(out["valid"], batch["valid"])
    # Running-average batch norm: an image's probability does not depend on its batch mates.
    alone = jax.jit(engine.eval_step)(
        state, {"image": images[:1], "valid": np.ones(1, bool), "index": np.zeros(1, np.int32)}
    )
    np.testing.assert_allclose(alone["probability"][0], out["probability"][0], rtol=1e-5)
    logits = engine.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, images, train=False
    )
    np.testing.assert_allclose(out["probability"], jax.nn.softmax(logits)[:, 1], rtol=1e-6)
