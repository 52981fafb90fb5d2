"""Building blocks of the CycleGAN generator and discriminator (THESIS_SPEC.md, "CycleGAN model").

Every layer computes what the reference (PyTorch) CycleGAN layer computes. Two of them can compute
it in another, exactly equivalent form that XLA's CPU backend runs several times faster. The
parameters are the same in every form (names, shapes, layout), so a checkpoint moves freely between
forms and backends; `form="auto"` picks the fast form on CPU and the plain one elsewhere.

Reflection-padded stride-1 conv (`ReflectConv`):
  "valid"      reflect pad, 'VALID' conv: the plain form.
  "same_crop"  reflect pad, 'SAME' conv, crop the border. Bit-identical: only the cropped border
               sees SAME's extra zeros. XLA CPU runs 'VALID' convs 2-5x slower than 'SAME' ones.
  "taps"       one matmul Cin -> kh·kw·Cout, then a sum of kh·kw shifted slices. For convs to a
               handful of channels (the generator's last 7×7 conv to 1 channel), where XLA CPU's
               conv, and above all its weight gradient, is several times slower than it should be.
               Equal up to float summation order (~1e-7 relative).
PyTorch ConvTranspose2d(kernel 3, stride 2, padding 1, output_padding 1) (`ConvTranspose2x`):
  "transpose"  lax.conv_transpose with explicit padding ((1, 2), (1, 2)): the plain form.
  "subpixel"   one 2×2 conv to 4·Cout channels, then depth-to-space. XLA CPU's gradient of a
               stride-2 transposed conv is 10-20x slower than a regular conv's.
               Equal up to float summation order.
Timings: `python -m xrayjax.models.profile_layers`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")

# Reference init: weights N(0, 0.02), biases 0.
normal_init = nn.initializers.normal(stddev=0.02)

REFLECT_CONV_FORMS = ("auto", "valid", "same_crop", "taps")
UPSAMPLE_FORMS = ("auto", "transpose", "subpixel")
# "auto" on CPU uses "taps" for convs to at most this many channels (measured: the 7×7 conv to 1
# channel is ~4x faster fwd+bwd as taps; 64 channels would make the taps tensor 49x too big).
TAPS_MAX_FEATURES = 4


def instance_norm(dtype: Any = jnp.float32, name: str | None = None) -> nn.InstanceNorm:
    """PyTorch's default InstanceNorm2d: no learnable scale or shift, epsilon 1e-5."""
    return nn.InstanceNorm(
        epsilon=1e-5,
        use_scale=False,
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def conv2d(x: jax.Array, kernel: jax.Array, padding: Any, strides: int = 1) -> jax.Array:
    """Plain NHWC/HWIO cross-correlation."""
    return lax.conv_general_dilated(x, kernel, (strides, strides), padding, dimension_numbers=_DIMS)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


# ---- reflect-padded conv ---------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _shifted_sum(z: jax.Array, kh: int, kw: int) -> jax.Array:
    """y[n, h, w, c] = sum over taps (i, j) of z[i·kw + j, n, h + i, w + j, c]."""
    height, width = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    return sum(
        z[i * kw + j, :, i : i + height, j : j + width] for i in range(kh) for j in range(kw)
    )


def _shifted_sum_fwd(z, kh, kw):
    return _shifted_sum(z, kh, kw), None


def _shifted_sum_bwd(kh, kw, _, dy):
    # Autodiff would pad every tap's cotangent to the size of all of z and add the kh·kw results;
    # stacking the padded cotangents writes z's size once.
    pads = [
        jnp.pad(dy, ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
        for i in range(kh)
        for j in range(kw)
    ]
    return (jnp.stack(pads, 0),)


_shifted_sum.defvjp(_shifted_sum_fwd, _shifted_sum_bwd)


def taps_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'VALID' conv of an already padded input as one matmul and a sum of shifted slices."""
    kh, kw, cin, cout = kernel.shape
    taps = kernel.reshape(kh * kw, cin, cout)
    # z: (kh·kw, N, H + kh - 1, W + kw - 1, Cout), accumulated in float32 whatever the dtype.
    z = jnp.einsum("nhwc,tcd->tnhwd", x, taps, preferred_element_type=jnp.float32)
    return _shifted_sum(z, kh, kw).astype(x.dtype)


def resolve_reflect_conv_form(form: str, features: int) -> str:
    if form not in REFLECT_CONV_FORMS:
        raise ValueError(
            f"unknown reflect conv form {form!r}; expected one of {REFLECT_CONV_FORMS}"
        )
    if form != "auto":
        return form
    if jax.default_backend() != "cpu":
        return "valid"
    return "taps" if features <= TAPS_MAX_FEATURES else "same_crop"


def reflect_conv(x: jax.Array, kernel: jax.Array, form: str) -> jax.Array:
    """Stride-1 conv with an odd kernel over the input reflect-padded by kernel // 2 (no bias)."""
    pad = kernel.shape[0] // 2
    padded = reflect_pad(x, pad)
    form = resolve_reflect_conv_form(form, kernel.shape[-1])
    if form == "valid":
        return conv2d(padded, kernel, "VALID")
    if form == "same_crop":
        return conv2d(padded, kernel, "SAME")[:, pad:-pad, pad:-pad]
    return taps_conv(padded, kernel)


class ReflectConv(nn.Module):
    """Reflection pad (kernel_size // 2) + stride-1 conv with bias, as nn.Conv's parameters."""

    features: int
    kernel_size: int
    form: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"ReflectConv needs an odd kernel, got {self.kernel_size}")
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return reflect_conv(x, kernel, self.form) + bias


# ---- PyTorch-aligned stride-2 transposed conv ------------------------------------------------

# Per axis, output y[2m + a] draws on inputs x[m + u] (u = 0, 1) through kernel tap
# _SUBPIXEL_TAP[u, a], where tap 3 is a zero:
#   y[2m] = x[m]·k[1],   y[2m+1] = x[m]·k[0] + x[m+1]·k[2]   (x beyond the edge is 0).
# k is the nn.ConvTranspose kernel, i.e. PyTorch's weight flipped in space:
# kernel = weight.transpose(2, 3, 0, 1)[::-1, ::-1] for a weight of shape (Cin, Cout, 3, 3).
_SUBPIXEL_TAP = np.array([[1, 0], [3, 2]])


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """(3, 3, Cin, Cout) transposed-conv kernel -> (2, 2, Cin, 4·Cout) conv kernel.

    Output channels are ordered (a_h, a_w, Cout), the sub-pixel phase of each output.
    """
    cin, cout = kernel.shape[2:]
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # tap 3 = zeros
    tap = _SUBPIXEL_TAP
    k = padded[tap[:, :, None, None], tap[None, None, :, :]]  # (u_h, a_h, u_w, a_w, Cin, Cout)
    return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)


def resolve_upsample_form(form: str) -> str:
    if form not in UPSAMPLE_FORMS:
        raise ValueError(f"unknown upsample form {form!r}; expected one of {UPSAMPLE_FORMS}")
    if form != "auto":
        return form
    return "subpixel" if jax.default_backend() == "cpu" else "transpose"


def conv_transpose_2x(x: jax.Array, kernel: jax.Array, form: str) -> jax.Array:
    """PyTorch ConvTranspose2d(3, stride=2, padding=1, output_padding=1) without bias: H -> 2H."""
    if resolve_upsample_form(form) == "transpose":
        return lax.conv_transpose(x, kernel, (2, 2), ((1, 2), (1, 2)), dimension_numbers=_DIMS)
    n, height, width, _ = x.shape
    cout = kernel.shape[-1]
    y = conv2d(x, subpixel_kernel(kernel), ((0, 1), (0, 1)))  # (N, H, W, 4·Cout)
    y = y.reshape(n, height, width, 2, 2, cout).transpose(
        0, 1, 3, 2, 4, 5
    )  # (N, H, a_h, W, a_w, C)
    return y.reshape(n, 2 * height, 2 * width, cout)


class ConvTranspose2x(nn.Module):
    """3×3 stride-2 transposed conv with bias, PyTorch-aligned; parameters as nn.ConvTranspose."""

    features: int
    form: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv_transpose_2x(x, kernel, self.form) + bias
