"""CycleGAN ResNet generator, 9 residual blocks (THESIS_SPEC.md, "CycleGAN model"; sec. 3.2.2.1).

  reflect pad 3, 7×7 conv -> features, norm, ReLU
  2 × (3×3 conv stride 2, zero pad 1, channels ×2, norm, ReLU)
  num_blocks × residual block at 4·features channels:
      reflect pad 1, 3×3 conv, norm, ReLU, dropout, reflect pad 1, 3×3 conv, norm; out = x + block
  2 × (3×3 transposed conv stride 2, PyTorch padding 1 / output_padding 1, channels ÷2, norm, ReLU)
  reflect pad 3, 7×7 conv -> out_channels, tanh

Norm is instance norm without scale or shift (epsilon 1e-5); every conv keeps its bias; weights
N(0, 0.02), biases 0. With the defaults and 1 input channel: 11,365,633 parameters. Input height
and width must be multiples of 4 (as in the reference).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from xrayjax.models.layers import ConvTranspose2x, PaddedConv, ReflectConv, instance_norm


class ResnetBlock(nn.Module):
    """x + [conv, norm, ReLU, dropout, conv, norm](x), reflection-padded 3×3 convs."""

    features: int
    dropout_rate: float = 0.2
    reflect_conv: str = "auto"
    weight_grad: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool, dropout_mask: jax.Array | None = None
    ) -> jax.Array:
        conv = functools.partial(
            ReflectConv,
            self.features,
            3,
            form=self.reflect_conv,
            weight_grad=self.weight_grad,
            dtype=self.dtype,
        )
        y = nn.relu(instance_norm(self.dtype)(conv(name="conv_0")(x)))
        if self.dropout_rate > 0 and train and dropout_mask is not None:
            # The arithmetic of nn.Dropout, with a mask drawn beforehand (draw_dropout_masks).
            y = jnp.where(dropout_mask, y / (1.0 - self.dropout_rate), jnp.zeros_like(y))
        elif self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return x + instance_norm(self.dtype)(conv(name="conv_1")(y))


# Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy
# as 1, 2, 3", SC 2011): the rotation constants of its two alternating groups of four rounds, and
# the constant of the third key word.
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_THREEFRY_KEY_PARITY = 0x1BD11BDA


def _threefry_2x32(
    k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32's 20 rounds of the uint32 blocks (x0, x1) under the key (k0, k1)."""
    keys = (k0, k1, k0 ^ k1 ^ np.uint32(_THREEFRY_KEY_PARITY))
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for group in range(5):
        for r in _THREEFRY_ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + keys[(group + 1) % 3]
        x1 = x1 + keys[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def bernoulli_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """`jax.random.bernoulli(key, keep_prob, shape)`, the same bits, faster on CPU.

    For a threefry key, with jax's partitionable threefry (its default), each element's 32 bits
    are the xor of the Threefry-2x32 block of (0, its row-major index), and the draw is True
    where the float made of their top 23 bits, in [0, 1), is below keep_prob; both are written
    out here. jax's own CPU lowering of Threefry runs its rounds in a loop whose body XLA
    compiles to two fusions and two copies of the blocks: the 128-px step's 144 masks of
    32×32×128 took 272 ms there and 13 ms here with jaxlib 0.10.2, 509 and 22 ms with 0.12.1
    (best of 12; docs/performance.md). Any other key or setting takes jax.random.bernoulli.
    """
    size = math.prod(shape)
    threefry = str(jax.random.key_impl(key)) == "threefry2x32"
    if not threefry or not jax.config.jax_threefry_partitionable or size >= 1 << 32:
        return jax.random.bernoulli(key, keep_prob, shape)
    k0, k1 = jax.random.key_data(key)
    index = lax.iota(jnp.uint32, size).reshape(shape)
    high, low = _threefry_2x32(k0, k1, jnp.zeros_like(index), index)
    mantissa = ((high ^ low) >> np.uint32(9)) | np.uint32(0x3F800000)  # a float in [1, 2)
    return lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0 < keep_prob


class _DropoutDraw(nn.Module):
    """nn.Dropout's keep mask: the key it takes (make_rng in its scope path), the same bits."""

    rate: float

    def __call__(self, shape: tuple[int, ...]) -> jax.Array:
        return bernoulli_mask(self.make_rng("dropout"), 1.0 - self.rate, shape)


class _BlockDropoutDraw(nn.Module):
    """A ResnetBlock's dropout mask, drawn where its nn.Dropout draws (block_i/Dropout_0)."""

    rate: float

    @nn.compact
    def __call__(self, shape: tuple[int, ...]) -> jax.Array:
        return _DropoutDraw(self.rate, name="Dropout_0")(shape)


class _GeneratorDropoutDraws(nn.Module):
    """Every residual block's dropout mask, drawn as the generator's own nn.Dropout layers do."""

    num_blocks: int
    rate: float

    @nn.compact
    def __call__(self, shape: tuple[int, ...]) -> jax.Array:
        draws = [_BlockDropoutDraw(self.rate, name=f"block_{i}") for i in range(self.num_blocks)]
        return jnp.stack([draw(shape) for draw in draws])


class ResnetGenerator(nn.Module):
    """Image-to-image generator, NHWC in, NHWC float32 in (-1, 1) out.

    Attributes:
      out_channels: channels of the output image (the input's are taken from the data).
      features: channels after the first conv; 2× and 4× after the downsampling convs.
      num_blocks: residual blocks at 4·features channels.
      dropout_rate: dropout inside each residual block (0.2 in the thesis; the reference has 0.5
        or none). Active only with train=True; draws from the 'dropout' rng collection.
      reflect_conv: form of the reflection-padded convs ("auto", "valid", "same_crop", "taps",
        "winograd"; see layers.py). All forms give the same results and share parameters.
      upsample: form of the transposed convs ("auto", "transpose", "subpixel", "taps").
      downsample: form of the stride-2 convs ("auto", "conv", "taps").
      weight_grad: how every conv's weight gradient is computed ("auto", "xla", "matmul",
        "winograd").
      dtype: compute dtype (e.g. jnp.bfloat16); parameters are always float32.
    """

    out_channels: int = 1
    features: int = 64
    num_blocks: int = 9
    dropout_rate: float = 0.2
    reflect_conv: str = "auto"
    upsample: str = "auto"
    downsample: str = "auto"
    weight_grad: str = "auto"
    dtype: Any = jnp.float32

    def draw_dropout_masks(self, keys: jax.Array, image_shape: tuple[int, ...]) -> jax.Array:
        """Each example's dropout masks, (num_blocks, N, H/4, W/4, 4·features), for `keys` (N,).

        Bit for bit the masks that `apply(..., images[n:n + 1], train=True, rngs={"dropout":
        keys[n]})` draws for example n, called under vmap over the examples (and without vmap
        too, for keys whose draws vmap does not change, such as threefry's): the draws run in
        the scope paths of the network's own nn.Dropout layers, so flax derives the same keys
        from each example's key. Drawn apart, they let the network run on the whole batch at
        once (`dropout_masks`), each example still with its own key. Needs dropout_rate > 0.
        """
        shape = (1, image_shape[0] // 4, image_shape[1] // 4, 4 * self.features)  # one example
        draws = _GeneratorDropoutDraws(self.num_blocks, self.dropout_rate, parent=None)
        masks = jax.vmap(lambda key: draws.apply({}, shape, rngs={"dropout": key}))(keys)
        return masks[:, :, 0].swapaxes(0, 1)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool, dropout_masks: jax.Array | None = None
    ) -> jax.Array:
        """G(x); `dropout_masks` (from `draw_dropout_masks`) replace the 'dropout' rngs' draws."""
        f, dtype = self.features, self.dtype
        forms = dict(weight_grad=self.weight_grad, dtype=dtype)
        x = x.astype(dtype)
        x = ReflectConv(f, 7, form=self.reflect_conv, **forms, name="stem")(x)
        x = nn.relu(instance_norm(dtype)(x))
        for i, mult in enumerate((2, 4)):
            x = PaddedConv(
                f * mult, 3, stride=2, padding=1, form=self.downsample, **forms, name=f"down_{i}"
            )(x)
            x = nn.relu(instance_norm(dtype)(x))
        for i in range(self.num_blocks):
            block = ResnetBlock(
                4 * f, self.dropout_rate, self.reflect_conv, **forms, name=f"block_{i}"
            )
            mask = None if dropout_masks is None else dropout_masks[i]
            x = block(x, train=train, dropout_mask=mask)
        for i, mult in enumerate((2, 1)):
            x = ConvTranspose2x(f * mult, form=self.upsample, **forms, name=f"up_{i}")(x)
            x = nn.relu(instance_norm(dtype)(x))
        x = ReflectConv(self.out_channels, 7, form=self.reflect_conv, **forms, name="head")(x)
        return jnp.tanh(x.astype(jnp.float32))
