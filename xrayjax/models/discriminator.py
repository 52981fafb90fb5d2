"""CycleGAN PatchGAN discriminator (THESIS_SPEC.md, "CycleGAN model"; sec. 3.2.2.1).

The reference's NLayerDiscriminator: 4×4 convs with zero padding 1,
  conv stride 2 -> features, LeakyReLU 0.2                           (no norm)
  (n_layers - 1) × conv stride 2 -> features·min(2^i, 8), norm, LeakyReLU 0.2
  conv stride 1 -> features·min(2^n_layers, 8), norm, LeakyReLU 0.2
  conv stride 1 -> 1 channel                                         (no sigmoid: least squares)
n_layers=3 (default) is the 70×70 PatchGAN: receptive field 70, a 256×256 input gives a 30×30
map, 2,762,689 parameters for 1 input channel. n_layers=4 is the thesis's "6 convolutional layers"
reading (receptive field 142).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from xrayjax.models.layers import PaddedConv, instance_norm


class PatchDiscriminator(nn.Module):
    """Maps an NHWC image to an NHWC float32 map of per-patch realness scores (1 channel).

    Attributes:
      features: channels of the first conv.
      n_layers: stride-2 convs, the first included (3: 70×70 PatchGAN; 4: 142×142).
      use_norm: instance norm on all but the first and last conv (False only for tests and
        ablations, e.g. to read the receptive field off a gradient).
      weight_grad: how the convs' weight gradients are computed ("auto", "xla", "matmul"; see
        layers.py; "winograd" is XLA's here, no conv of the discriminator takes that form). All
        give the same results.
      dtype: compute dtype; parameters are always float32.
    """

    features: int = 64
    n_layers: int = 3
    use_norm: bool = True
    weight_grad: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        # (features, stride, norm) per conv before the last
        layers = [(self.features, 2, False)]
        layers += [(self.features * min(2**i, 8), 2, True) for i in range(1, self.n_layers)]
        layers += [(self.features * min(2**self.n_layers, 8), 1, True)]
        for i, (features, stride, norm) in enumerate(layers):
            x = self._conv(features, stride, f"conv_{i}")(x)
            if norm and self.use_norm:
                x = instance_norm(self.dtype)(x)
            x = nn.leaky_relu(x, 0.2)
        x = self._conv(1, 1, f"conv_{len(layers)}")(x)
        return x.astype(jnp.float32)

    def _conv(self, features: int, stride: int, name: str) -> PaddedConv:
        return PaddedConv(
            features,
            4,
            stride=stride,
            padding=1,
            weight_grad=self.weight_grad,
            dtype=self.dtype,
            name=name,
        )
