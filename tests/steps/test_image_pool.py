"""The functional image pool follows the reference ImagePool's rules."""

import jax
import jax.numpy as jnp
import numpy as np

from xrayjax.steps.image_pool import init_pool, query_pool


def _images(values):
    return jnp.asarray(values, jnp.float32).reshape(-1, 1, 1, 1)


def _keys(seed, n):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def test_filling_stores_and_returns_new_images():
    pool = init_pool(4, (1, 1, 1))
    pool, out = query_pool(pool, _images([1, 2, 3]), _keys(0, 3))
    np.testing.assert_array_equal(out.ravel(), [1, 2, 3])
    assert int(pool.count) == 3
    np.testing.assert_array_equal(pool.images.ravel(), [1, 2, 3, 0])


def test_full_pool_swaps_about_half_and_returns_stored_images():
    pool = init_pool(8, (1, 1, 1))
    pool, _ = query_pool(pool, _images(range(1, 9)), _keys(1, 8))
    new = np.arange(100, 1100, dtype=np.float32)
    pool2, out = query_pool(pool, _images(new), _keys(2, len(new)))
    out = np.asarray(out).ravel()
    returned_new = out == new
    assert 0.4 < returned_new.mean() < 0.6  # swap probability ½
    # Replay: an image not returned must be in the pool at that moment, and takes its place.
    stored = list(np.asarray(pool.images).ravel())
    for image, got in zip(new, out, strict=True):
        if got != image:
            assert got in stored
            stored[stored.index(got)] = image
    assert sorted(stored) == sorted(np.asarray(pool2.images).ravel())
    assert int(pool2.count) == 8


def test_sequential_semantics_with_one_slot():
    # Size 1: the first image fills; afterwards a swap returns exactly the previous stored one.
    pool = init_pool(1, (1, 1, 1))
    pool, out = query_pool(pool, _images([5, 6, 7, 8, 9, 10]), _keys(3, 6))
    out = np.asarray(out).ravel().tolist()
    stored = 5.0
    for image, got in zip([6, 7, 8, 9, 10], out[1:], strict=True):
        assert got in (image, stored)
        if got == stored:
            stored = float(image)
    assert float(pool.images.ravel()[0]) == stored


def test_size_zero_is_identity():
    pool = init_pool(0, (1, 1, 1))
    images = _images([1, 2])
    _, out = query_pool(pool, images, _keys(0, 2))
    np.testing.assert_array_equal(out, images)
