"""The thesis's small ResNet that labels forearm X-rays normal/abnormal (sec. 3.2.3, fig. 32).

stem: 5×5 conv (stride 1, `width` filters), BN, ReLU → 3×3 max-pool, stride 2
body: `num_modules` residual modules; module i has `width·2^i` channels and `blocks_per_module`
      basic blocks, the first of which convolves with stride 2
head: global average pool over the whole final map → Dense(num_classes) logits

Decisions the thesis leaves open (THESIS_SPEC.md, "Classifier"): channels double per module, batch
norm after every conv with statistics over the global batch, a strided 1×1 conv + BN projection on
the skip path where shapes change. Convs feeding a batch norm carry no bias (the BN shift makes it
redundant). Padding follows the usual ResNet convention (3×3: 1 on each side, max-pool: 1 on each
side, 5×5: 2 on each side), so a stride-2 layer maps n pixels to ⌈n/2⌉; a 256×256 input thus
reaches the head as a 2×2 map (256 → 128 after the pool → 64, 32, 16, 8, 4, 2), not the 4×4 the
thesis's pool size suggests.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xrayjax.models.layers import max_pool_3x3_stride_2

# He initialisation (fan-out, as torchvision's ResNet) suits convs followed by ReLU; the thesis is
# silent on initialisation.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric 'same' padding for an odd kernel (PyTorch style, unlike XLA's SAME at stride 2)."""
    return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


class BasicBlock(nn.Module):
    """3×3 conv, BN, ReLU, 3×3 conv, BN, add skip (projected when the shape changes), ReLU."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """(B, H, W, C) → (B, ⌈H/s⌉, ⌈W/s⌉, features)."""
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )
        s = (self.strides, self.strides)
        y = conv(self.features, (3, 3), strides=s, padding=_pad(3), name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, (3, 3), padding=_pad(3), name="conv2")(y)
        y = norm(name="bn2")(y)
        skip = x
        if self.strides != 1 or x.shape[-1] != self.features:
            # A 1×1 conv at stride s with no padding keeps ⌈n/s⌉ pixels, like the 3×3 conv above.
            skip = conv(self.features, (1, 1), strides=s, padding="VALID", name="proj_conv")(x)
            skip = norm(name="proj_bn")(skip)
        return nn.relu(y + skip)


class ResidualModule(nn.Module):
    """One thesis "residual module": `num_blocks` basic blocks, the first at stride 2."""

    features: int
    num_blocks: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """(B, H, W, C) → (B, ⌈H/2⌉, ⌈W/2⌉, features)."""
        for i in range(self.num_blocks):
            x = BasicBlock(
                self.features, strides=2 if i == 0 else 1, dtype=self.dtype, name=f"block{i}"
            )(x, train=train)
        return x


class ResNetClassifier(nn.Module):
    """The thesis classifier; `__call__` returns logits, or (logits, pooled features)."""

    width: int = 10
    num_modules: int = 6
    blocks_per_module: int = 2
    num_classes: int = 2
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32
    pool_form: str = "auto"  # the stem max-pool's form (layers.max_pool_3x3_stride_2)

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, *, train: bool, return_features: bool = False
    ) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """(B, H, W, C) images → float32 logits (B, num_classes) [, features (B, width·2^(M−1))].

        The features are the globally pooled vector the head reads, used e.g. for a kernel
        inception distance. `train=True` normalises with batch statistics and needs
        `mutable=['batch_stats']`; `train=False` uses the running averages.
        """
        x = jnp.asarray(x, self.dtype)
        x = nn.Conv(
            self.width,
            (5, 5),
            padding=_pad(5),
            use_bias=False,
            kernel_init=_conv_init,
            dtype=self.dtype,
            name="stem_conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            name="stem_bn",
        )(x)
        x = nn.relu(x)
        # The border padding (−inf) never wins the max; "auto" takes an exact faster form on CPU.
        x = max_pool_3x3_stride_2(x, self.pool_form)
        for i in range(self.num_modules):
            x = ResidualModule(
                self.width * 2**i,
                num_blocks=self.blocks_per_module,
                dtype=self.dtype,
                name=f"residual_module{i}",
            )(x, train=train)
        # Average over the whole final map, whatever its size (2×2 for a 256×256 input).
        features = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(features)
        # Losses and metrics want float32 even when the body computes in bfloat16.
        logits = logits.astype(jnp.float32)
        if return_features:
            return logits, features.astype(jnp.float32)
        return logits
