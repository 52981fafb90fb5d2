"""ResNetClassifier: shapes, parameter count, final map size, batch norm across devices."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from xrayjax.models.classifier import ResNetClassifier


def expected_param_count(
    in_channels: int = 1,
    width: int = 10,
    num_modules: int = 6,
    blocks_per_module: int = 2,
    num_classes: int = 2,
) -> int:
    """Parameters of the thesis ResNet, by hand.

    Convs feeding a batch norm have no bias (use_bias=False): a k×k conv cin → cout has
    k²·cin·cout weights, and its BN a scale and a shift per channel, 2·cout (running mean/var are
    batch_stats, not params).
    """
    conv_bn = lambda k, cin, cout: k * k * cin * cout + 2 * cout  # noqa: E731
    total = conv_bn(5, in_channels, width)  # stem
    cin = width
    for i in range(num_modules):
        cout = width * 2**i
        # First block: strided 3×3 (cin → cout), 3×3 (cout → cout), 1×1 projection (cin → cout).
        total += conv_bn(3, cin, cout) + conv_bn(3, cout, cout) + conv_bn(1, cin, cout)
        # Remaining blocks: two 3×3 (cout → cout), identity skip.
        total += (blocks_per_module - 1) * 2 * conv_bn(3, cout, cout)
        cin = cout
    return total + cin * num_classes + num_classes  # Dense head with bias


def init_key() -> jax.Array:
    """A key for real initialisations.

    XLA:CPU takes ~15-20 s to compile threefry for the model's ~60 initialisers; the rbg
    generator compiles in a few seconds. Jitted, because op-by-op dispatch is slower still.
    """
    return jax.random.key(0, impl="rbg")


def numpy_variables(shapes: Any, seed: int = 0) -> Any:
    """He-scaled weights and fresh BN state from numpy: a full-size init compiles for ~10 s."""
    rng = np.random.default_rng(seed)

    def fill(path: tuple, leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("size", [256, 64])
def test_logits_and_features_shape(size):
    model = ResNetClassifier()
    x = jnp.zeros((2, size, size, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    logits, features = jax.eval_shape(
        lambda v: model.apply(v, x, train=False, return_features=True), variables
    )
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    assert features.shape == (2, 320)


def test_parameter_count_matches_formula():
    model = ResNetClassifier()
    x = jnp.zeros((1, 64, 64, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert count(variables["params"]) == expected_param_count() == 4_375_712
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    small = ResNetClassifier(width=4, num_modules=3, blocks_per_module=3)
    small_vars = jax.eval_shape(lambda: small.init(jax.random.key(0), x, train=False))
    assert count(small_vars["params"]) == expected_param_count(
        width=4, num_modules=3, blocks_per_module=3
    )


def test_final_feature_map_at_256():
    # 256 → 128 (max-pool) → 64, 32, 16, 8, 4, 2 (six stride-2 modules): the map is 2×2, so the
    # thesis's "4×4 average pool" does not hold for six modules; the global pool covers the 2×2.
    model = ResNetClassifier()
    x = jnp.zeros((1, 256, 256, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    _, state = jax.eval_shape(
        lambda v: model.apply(
            v,
            x,
            train=False,
            capture_intermediates=lambda mdl, _: mdl.name == "residual_module5",
        ),
        variables,
    )
    (final_map,) = state["intermediates"]["residual_module5"]["__call__"]
    assert final_map.shape == (1, 2, 2, 320)


@pytest.fixture(scope="module")
def tiny():
    model = ResNetClassifier(width=4, num_modules=2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 16, 16, 1)), jnp.float32)
    variables = jax.jit(lambda k: model.init(k, x, train=False))(init_key())
    return model, variables, x


def test_real_forward_runs_at_64():
    model = ResNetClassifier()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 1)), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    variables = numpy_variables(shapes)
    logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    assert logits.shape == (2, 2) and bool(jnp.all(jnp.isfinite(logits)))


def test_train_updates_batch_stats(tiny):
    model, variables, x = tiny
    logits, updates = model.apply(
        variables,
        x + 3.0,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: mdl.name == "stem_conv",
    )
    assert logits.shape == (8, 2)
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(updates["batch_stats"])
    assert len(old) == len(new) > 0
    assert all(not np.allclose(a, b) for a, b in zip(old, new, strict=True))
    # momentum 0.9: the stem's running mean moves a tenth of the way to the batch mean.
    (stem_out,) = updates["intermediates"]["stem_conv"]["__call__"]
    np.testing.assert_allclose(
        updates["batch_stats"]["stem_bn"]["mean"],
        0.9 * 0.0 + 0.1 * jnp.mean(stem_out, axis=(0, 1, 2)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_eval_is_deterministic_and_per_example(tiny):
    model, variables, x = tiny
    a = model.apply(variables, x, train=False)
    b = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(a, b)
    # Running averages, not batch statistics: an example's logits ignore the rest of the batch.
    c = model.apply(variables, x[:3], train=False)
    np.testing.assert_allclose(a[:3], c, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params(tiny):
    _, variables, x = tiny
    model = ResNetClassifier(width=4, num_modules=2, dtype=jnp.bfloat16)
    logits, features = model.apply(variables, x, train=False, return_features=True)
    assert logits.dtype == features.dtype == jnp.float32


def test_batch_norm_statistics_are_global_across_devices(tiny):
    model, variables, x = tiny
    assert jax.device_count() == 4

    def step(v, batch):
        return model.apply(v, batch, train=True, mutable=["batch_stats"])

    single_logits, single = jax.jit(step)(variables, x)

    mesh = Mesh(jax.devices(), ("data",))
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P("data"))
    v = jax.device_put(variables, replicated)
    batch = jax.device_put(x, sharded)
    assert len(batch.addressable_shards) == 4  # 2 examples per device
    multi_logits, multi = jax.jit(step, in_shardings=(replicated, sharded))(v, batch)

    np.testing.assert_allclose(multi_logits, single_logits, atol=1e-5)
    for a, b in zip(
        jax.tree.leaves(single["batch_stats"]), jax.tree.leaves(multi["batch_stats"]), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Per-device statistics would differ: the first device's 2 examples alone give another mean.
    _, local = jax.jit(step)(variables, x[:2])
    stem_local = local["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(stem_local, single["batch_stats"]["stem_bn"]["mean"], atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 9, 7, 3), (3, 16, 16, 4)])
def test_fast_max_pool_equals_flax_values_and_gradients_ties_included(shape):
    from xrayjax.models import layers

    rng = np.random.default_rng(sum(shape))
    smooth = rng.standard_normal(shape).astype(np.float32)
    tied = np.maximum(np.round(smooth), 0).astype(np.float32)  # many equal maxima, as after ReLU
    out_shape = (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), shape[3])
    weights = rng.standard_normal(out_shape).astype(np.float32)
    for x in (smooth, tied):
        plain = layers.max_pool_3x3_stride_2(x, "xla")
        fast = layers.max_pool_3x3_stride_2(x, "taps")
        np.testing.assert_array_equal(plain, fast)
        grads = [
            jax.grad(lambda v, f=form: (layers.max_pool_3x3_stride_2(v, f) * weights).sum())(x)
            for form in ("xla", "taps")
        ]
        # The same winner gets each window's gradient; only summation order may differ.
        np.testing.assert_allclose(grads[0], grads[1], atol=1e-6)
        assert np.array_equal(grads[0] != 0, grads[1] != 0)
    with pytest.raises(ValueError, match="unknown form"):
        layers.max_pool_3x3_stride_2(smooth, "fast")
