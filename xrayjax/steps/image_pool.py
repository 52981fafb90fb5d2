"""A functional history pool of generated images (the reference CycleGAN's ImagePool).

Discriminators see a generated image either fresh or swapped for one generated earlier, which
damps oscillation. Each new image: while the pool fills it is stored and used; afterwards, with
probability ½ it replaces a uniformly chosen stored image and the stored one is used instead,
otherwise it is used as is. The pool lives in the train state, so it is checkpointed and the
step stays a pure function; the random choices are keyed per example by its global index.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class PoolState:
    """`images` (size, H, W, C) holds the first `count` stored images."""

    images: jax.Array
    count: jax.Array  # int32 scalar


def init_pool(size: int, image_shape: tuple[int, ...], dtype=jnp.float32) -> PoolState:
    """An empty pool holding up to `size` images of `image_shape` (H, W, C)."""
    return PoolState(jnp.zeros((size, *image_shape), dtype), jnp.zeros((), jnp.int32))


def query_pool(pool: PoolState, images: jax.Array, keys: jax.Array) -> tuple[PoolState, jax.Array]:
    """Return the images the discriminator sees and the updated pool.

    `images` (B, H, W, C) are processed in batch order; `keys` (B,) gives each its own
    randomness. A pool of size 0 returns the images unchanged.
    """
    size = pool.images.shape[0]
    if size == 0:
        return pool, images

    # Draw every example's randomness up front: random ops inside the scan body compile slowly.
    split = jax.vmap(jax.random.split)(keys)
    swaps = jax.vmap(jax.random.uniform)(split[:, 0]) < 0.5
    stored_indices = jax.vmap(lambda k: jax.random.randint(k, (), 0, size))(split[:, 1])

    def one(carry: PoolState, inputs):
        image, swap, stored_index = inputs
        filling = carry.count < size
        write_index = jnp.where(filling, carry.count, stored_index)
        write = filling | swap
        stored = carry.images[stored_index]
        out = jnp.where(swap & ~filling, stored, image)
        # Writing the old value back when nothing changes keeps this an in-place update.
        kept = jnp.where(write, image, carry.images[write_index])
        new_images = carry.images.at[write_index].set(kept)
        count = jnp.minimum(carry.count + 1, size)
        return PoolState(new_images, count), out

    pool, outputs = jax.lax.scan(one, pool, (images, swaps, stored_indices))
    return pool, outputs
