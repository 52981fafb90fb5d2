"""Building blocks of the CycleGAN generator and discriminator (THESIS_SPEC.md, "CycleGAN model").

Every layer computes what the reference (PyTorch) CycleGAN layer computes. Several can compute it
in another, mathematically identical form that XLA's CPU backend runs several times faster. The
parameters are the same in every form (names, shapes, layout), so a checkpoint moves freely between
forms and backends; "auto" picks the fast form on CPU and the plain one elsewhere (unmeasured on
GPU/TPU, where cuDNN-style libraries handle the plain forms well). The CPU choices suit XLA's
default convolutions (YNNPACK's, in jaxlib 0.10 and 0.12); the GAN trainer's large CPU step,
compiled with XLA's own, takes "winograd" and XLA's weight gradient, Winograd's in the largest
steps (`xrayjax.build.large_cpu_step_engine`).

Reflection-padded stride-1 conv (`ReflectConv`, `form`):
  "valid"      reflect pad, 'VALID' conv: the plain form.
  "same_crop"  reflect pad, 'SAME' conv, crop the border. Bit-identical: only the cropped border
               sees SAME's extra zeros. XLA CPU ran 'VALID' convs 2-5x slower than 'SAME' ones
               when this form was chosen; the whole small steps measured since run faster
               with "valid", which "auto" now takes.
  "taps"       one matmul Cin -> kh·kw·Cout, then a sum of kh·kw shifted slices. For convs to a
               handful of channels (the generator's last 7×7 conv to 1 channel), which XLA CPU
               runs several times slower than it should, above all their weight gradient.
  "winograd"   3×3 convs on maps of even height and width (the residual blocks' convs):
               Winograd's F(2×2, 3×3), 16 matmuls of 4/9 of the plain form's multiplications,
               forward and input gradient; the weight gradient as `weight_grad` says. Other
               convs take "taps" up to TAPS_MAX_FEATURES output channels (the generator's last
               conv; its products laid out pixel-major, see `taps_conv`), "valid" above.
               Results differ from the plain form's by float rounding (~1e-6 relative, more
               than the other forms' ~1e-7).
PyTorch ConvTranspose2d(kernel 3, stride 2, padding 1, output_padding 1) (`ConvTranspose2x`,
`form`):
  "transpose"  lax.conv_transpose with explicit padding ((1, 2), (1, 2)): the plain form.
  "subpixel"   one 2×2 conv to 4·Cout channels, then depth-to-space. XLA CPU's gradient of a
               stride-2 transposed conv is 10-20x slower than a regular conv's.
  "taps"       per output row phase, one matmul Cin -> (its 3 or 6 kernel taps)·Cout at every
               input pixel; each of the four output phases then sums its taps' slices (1, 2, 2
               and 4 of them), shifted. No zero taps (the 2×2 subpixel kernel is 7/16 zeros),
               and a custom VJP whose input and weight gradients are plain 2-D matmuls: with
               autodiff's N-D contractions instead, this layer's backward ran 2-4x slower.
3×3 stride-2 conv with zero padding 1, the generator's downsampling (`PaddedConv`, `form`):
  "conv"       lax conv, autodiff's gradients: the plain form.
  "taps"       the same forward; a custom VJP whose input gradient is the "taps" transposed conv
               above (the input gradient of this conv is that transposed conv of the output
               gradient, the kernel turned by 180° and its channels swapped), and whose weight
               gradient is "matmul"'s, in place of XLA's dilated convolutions. Other kernels,
               strides, paddings and maps of odd size take "conv". "auto" is "conv" on every
               backend: "taps" was measured only with XLA's own CPU convolutions (large steps).
Weight gradient of every conv (`weight_grad`):
  "xla"        autodiff: XLA computes it as a convolution with the output gradient as the
               kernel ("auto" on every backend).
  "matmul"     a custom VJP: the input gradient stays XLA's, the weight gradient is kh·kw
               matmuls (input pixels under each kernel tap)ᵀ · (output gradient). Faster than
               XLA's in the single-layer timings it was chosen from, slower in the whole steps
               measured since (docs/performance.md, "Plain convs").
  "winograd"   convs in Winograd's form (above) compute their weight gradient in it too: the
               tiles' transforms ᵀ · the output gradient's, summed over tiles, 16 matmuls of
               (Cin, tiles)·(tiles, Cout) with 4/9 of the plain form's multiplications; every
               other conv takes XLA's. The largest CPU steps' form (`xrayjax.build`).
The non-plain forms differ from the plain ones only in float rounding: ~1e-7 relative, Winograd's
~1e-6.
Timings: `python -m xrayjax.tools.profile_layers`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]  # zero padding (low, high) per spatial axis

# Reference init: weights N(0, 0.02), biases 0.
normal_init = nn.initializers.normal(stddev=0.02)

REFLECT_CONV_FORMS = ("auto", "valid", "same_crop", "taps", "winograd")
UPSAMPLE_FORMS = ("auto", "transpose", "subpixel", "taps")
DOWNSAMPLE_FORMS = ("auto", "conv", "taps")
WEIGHT_GRAD_FORMS = ("auto", "xla", "matmul", "winograd")
# The generator's form fields with their choices, and the plain form of each (see above).
FORMS = {
    "upsample": UPSAMPLE_FORMS,
    "downsample": DOWNSAMPLE_FORMS,
    "reflect_conv": REFLECT_CONV_FORMS,
    "weight_grad": WEIGHT_GRAD_FORMS,
}
PLAIN_FORMS = {
    "upsample": "transpose",
    "downsample": "conv",
    "reflect_conv": "valid",
    "weight_grad": "xla",
}
# "auto" on CPU uses "taps" for convs to at most this many channels (measured, 2-core CPU, 256²:
# the 7×7 conv 64 -> 1 takes 161 ms fwd+bwd as taps, 534 ms as 'VALID', 748 ms as 'SAME'+crop;
# for 64 output channels the taps tensor would be 49x the output), "valid" for the others, and
# XLA's weight gradients. Until 2026-12-06 (night) it took "same_crop", and the matmul weight
# gradient for large maps, wide convs and convs to a few channels (chosen from single-layer
# timings). Whole small CPU steps, steps alternating, took 0.74-0.91 of their
# time in those forms (the 64-px CycleGAN step, 16 features, batch 1: 0.0488 against 0.0643 s;
# 8 features, batch 4: 0.0681 against 0.0857 s; the 128-px one, 16 features: 0.186 against
# 0.203 s), and the 64-px step compiled in 12.0-12.6 against 15.4-15.8 s under the test suite's
# XLA options (docs/performance.md, "Plain convs").
TAPS_MAX_FEATURES = 4
# The matmul weight gradient gathers all taps into one matrix (im2col) when kh·kw·Cin is at most
# this, and runs one matmul per tap above it.
IM2COL_MAX_DEPTH = 256


def _resolve(form: str, forms: tuple[str, ...], on_cpu: str, elsewhere: str) -> str:
    if form not in forms:
        raise ValueError(f"unknown form {form!r}; expected one of {forms}")
    if form != "auto":
        return form
    return on_cpu if jax.default_backend() == "cpu" else elsewhere


def resolve_reflect_conv_form(form: str, features: int) -> str:
    """A reflect conv's form; "auto" is "taps" to at most TAPS_MAX_FEATURES channels on CPU."""
    fast = "taps" if features <= TAPS_MAX_FEATURES else "valid"
    return _resolve(form, REFLECT_CONV_FORMS, fast, "valid")


def resolve_upsample_form(form: str) -> str:
    return _resolve(form, UPSAMPLE_FORMS, "taps", "transpose")


def resolve_downsample_form(form: str) -> str:
    """The stride-2 convs' form; "auto" is "conv" on every backend (see above)."""
    return _resolve(form, DOWNSAMPLE_FORMS, "conv", "conv")


def resolve_weight_grad_form(form: str) -> str:
    """A conv's weight gradient form; "auto" is XLA's own on every backend (see above)."""
    return _resolve(form, WEIGHT_GRAD_FORMS, "xla", "xla")


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


def _reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _unreflect(g: jax.Array, axis: int, pad: int) -> jax.Array:
    """The transpose of reflect padding by `pad` along `axis` (length n + 2·pad -> n)."""
    n = g.shape[axis] - 2 * pad

    def rows(start: int, stop: int) -> jax.Array:
        return lax.slice_in_dim(g, start, stop, axis=axis)

    def placed(a: jax.Array, before: int, after: int) -> jax.Array:
        widths = [(0, 0)] * g.ndim
        widths[axis] = (before, after)
        return jnp.pad(a, widths)

    # Padded rows 0..pad-1 copy rows pad..1, and rows n+pad.. copy rows n-2..n-1-pad.
    low = jnp.flip(rows(0, pad), axis)
    high = jnp.flip(rows(n + pad, n + 2 * pad), axis)
    return rows(pad, pad + n) + placed(low, 1, n - 1 - pad) + placed(high, n - 1 - pad, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _reflect_pad_unreflected_grad(x: jax.Array, pad: int) -> jax.Array:
    return _reflect_pad(x, pad)


def _reflect_pad_fwd(x, pad):
    return _reflect_pad(x, pad), None


def _reflect_pad_bwd(pad, _, g):
    # Autodiff's transpose of jnp.pad's reflect mode is a chain of slice-and-pad passes over the
    # padded gradient, each written out (four fusions in a 3×3 conv's input gradient); one
    # expression per axis leaves three, and runs faster (docs/performance.md). Width first, as
    # autodiff goes: the same sums in the same order (the CycleGAN step's results are the same
    # to the bit either way).
    return (_unreflect(_unreflect(g, 2, pad), 1, pad),)


_reflect_pad_unreflected_grad.defvjp(_reflect_pad_fwd, _reflect_pad_bwd)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """NHWC x reflect-padded by `pad` in height and width, as PyTorch's ReflectionPad2d.

    Differentiable in reverse mode (a custom VJP above the smallest sizes); `jax.jvp` through
    it is not defined.
    """
    # Where the two borders' copies meet (or reflect again, numpy's way for pad >= size), a pixel
    # takes three or more copies, summed in another order than autodiff's: autodiff keeps those.
    if 2 * pad + 2 > min(x.shape[1], x.shape[2]):
        return _reflect_pad(x, pad)
    return _reflect_pad_unreflected_grad(x, pad)


# ---- convolution with a choice of weight gradient ----------------------------------------------


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DIMS)


def _kernel_grad(x, dy, kernel_shape, stride: int, padding: Padding) -> jax.Array:
    """Gradient of a conv's kernel: sum over output pixels of (input patch) ⊗ (output gradient)."""
    kh, kw, cin, cout = kernel_shape
    _, ho, wo, _ = dy.shape
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))

    def tap(i, j):  # (N·Ho·Wo, Cin): the input pixel under kernel tap (i, j), per output pixel
        rows = slice(i, i + stride * (ho - 1) + 1, stride)
        cols = slice(j, j + stride * (wo - 1) + 1, stride)
        return padded[:, rows, cols].reshape(-1, cin)

    dy = dy.reshape(-1, cout)
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    if kh * kw * cin <= IM2COL_MAX_DEPTH:
        patches = jnp.concatenate([tap(i, j) for i, j in taps], axis=1)  # (N·Ho·Wo, kh·kw·Cin)
        dk = jnp.einsum("pk,pd->kd", patches, dy, preferred_element_type=jnp.float32)
    else:
        dk = jnp.stack(
            [
                jnp.einsum("pc,pd->cd", tap(i, j), dy, preferred_element_type=jnp.float32)
                for i, j in taps
            ]
        )
    return dk.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_weight_grad(x, kernel, stride: int, padding: Padding) -> jax.Array:
    return _lax_conv(x, kernel, stride, padding)


def _conv_matmul_weight_grad_fwd(x, kernel, stride, padding):
    return _lax_conv(x, kernel, stride, padding), (x, kernel)


def _conv_matmul_weight_grad_bwd(stride, padding, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _lax_conv(x, kernel, stride, padding), x)
    (dx,) = input_vjp(dy)
    dk = _kernel_grad(x, dy, kernel.shape, stride, padding)
    return dx, dk.astype(kernel.dtype)


_conv_matmul_weight_grad.defvjp(_conv_matmul_weight_grad_fwd, _conv_matmul_weight_grad_bwd)


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int = 1,
    padding: Any = ((0, 0), (0, 0)),
    weight_grad: str = "xla",
) -> jax.Array:
    """NHWC × HWIO cross-correlation with zero padding ((lo, hi), (lo, hi)), no bias."""
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if resolve_weight_grad_form(weight_grad) == "matmul":
        return _conv_matmul_weight_grad(x, kernel, stride, padding)
    return _lax_conv(x, kernel, stride, padding)


class PaddedConv(nn.Module):
    """k×k conv with zero padding `padding` on every side and bias: PyTorch's Conv2d.

    Parameters as nn.Conv's (names, shapes), so either module reads the other's checkpoints.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 1
    weight_grad: str = "auto"
    dtype: Any = jnp.float32
    form: str = "auto"  # DOWNSAMPLE_FORMS; "taps" applies to 3×3 stride-2 convs with padding 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if resolve_downsample_form(self.form) == "taps" and _downsample_taps_applies(
            x.shape, shape, self.stride, self.padding
        ):
            return _downsample_taps(x, kernel) + bias
        pad = (self.padding, self.padding)
        return conv2d(x, kernel, self.stride, (pad, pad), self.weight_grad) + bias


# ---- reflect-padded conv ---------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _shifted_sum(z: jax.Array, kh: int, kw: int, tap_axis: int) -> jax.Array:
    """y[n, h, w, c] = sum over taps (i, j) of tap i·kw + j of z at (n, h + i, w + j, c).

    The taps lie on `tap_axis`: z is (kh·kw, N, H + kh - 1, W + kw - 1, C) for 0, or
    (N, H + kh - 1, W + kw - 1, kh·kw, C) for 3.
    """
    rows = 2 if tap_axis == 0 else 1  # z's height axis
    height, width = z.shape[rows] - kh + 1, z.shape[rows + 1] - kw + 1

    def plane(t: int, i: int, j: int) -> jax.Array:  # tap t's shifted slice, (N, H, W, C)
        if tap_axis == 0:
            return z[t, :, i : i + height, j : j + width]
        # Indexed in place: moving the tap axis first made XLA copy all of z in the large
        # 128-px step (six (49, 4, 134, 134, 1) copies per step, 60 ms of 1.8 s).
        return z[:, i : i + height, j : j + width, t]

    return sum(plane(i * kw + j, i, j) for i in range(kh) for j in range(kw))


def _shifted_sum_fwd(z, kh, kw, tap_axis):
    return _shifted_sum(z, kh, kw, tap_axis), None


def _shifted_sum_bwd(kh, kw, tap_axis, _, dy):
    # Autodiff would pad every tap's cotangent to the size of all of z and add the kh·kw results;
    # stacking the padded cotangents writes z's size once.
    pads = [
        jnp.pad(dy, ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
        for i in range(kh)
        for j in range(kw)
    ]
    return (jnp.stack(pads, tap_axis),)


_shifted_sum.defvjp(_shifted_sum_fwd, _shifted_sum_bwd)


def taps_conv(x: jax.Array, kernel: jax.Array, pixel_major: bool = False) -> jax.Array:
    """'VALID' conv of an already padded input as one matmul and a sum of shifted slices.

    The matmul's product z holds kh·kw·Cout values per input pixel, tap-major (kh·kw, N, H', W',
    Cout) or, with `pixel_major`, as the matmul leaves them (N, H', W', kh·kw, Cout). Tap-major
    has XLA transpose the input (and z's gradient) for the matmuls: with XLA's own CPU
    convolutions the generator's last conv took 12.65 against 17.70 ms pixel-major (forward and
    both gradients, 128 px, batch 4, 32 → 1; docs/performance.md, "Sums of taps"). The two
    round differently; "auto"'s "taps" form stays tap-major, so the programs of small steps
    (the demo's) are unchanged.
    """
    kh, kw, cin, cout = kernel.shape
    if pixel_major:
        matrix = kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)  # (Cin, taps·Cout)
        z = jnp.matmul(x.reshape(-1, cin), matrix, preferred_element_type=jnp.float32)
        z = z.reshape(*x.shape[:3], kh * kw, cout)
        return _shifted_sum(z, kh, kw, 3).astype(x.dtype)
    # z: (kh·kw, N, H + kh - 1, W + kw - 1, Cout), accumulated in float32 whatever the dtype.
    taps = kernel.reshape(kh * kw, cin, cout)
    z = jnp.einsum("nhwc,tcd->tnhwd", x, taps, preferred_element_type=jnp.float32)
    return _shifted_sum(z, kh, kw, 0).astype(x.dtype)


# ---- Winograd's F(2×2, 3×3) ---------------------------------------------------------------------
# A 2×2 block of a 3×3 conv's output from the 4×4 input tile under it: Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A
# (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016). Per tile and
# channel pair, 16 multiplications instead of 36; the elementwise products over all tiles and
# input channels are 16 matmuls. Bᵀ and Aᵀ hold only 0 and ±1: their products are additions.
_F23_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_F23_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_F23_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combination(weights: np.ndarray, terms: list[jax.Array]) -> jax.Array:
    """sum(w·t) over the nonzero weights, a ±1 weight as an addition or subtraction."""
    total = None
    for w, t in zip(weights, terms, strict=True):
        if w == 0:
            continue
        t = t if w == 1 else -t if w == -1 else float(w) * t
        total = t if total is None else total + t
    return total


def _transform(
    weights: np.ndarray, term: Callable[[int, int], jax.Array], rows_first: bool = True
) -> list[list[jax.Array]]:
    """W·T·Wᵀ of a square grid of arrays T: out[p][q] = Σ_a Σ_b W[p, a]·W[q, b]·term(a, b).

    `rows_first` sums over a first, then over b; otherwise b first: the same sums in another
    order. Each sum is a `_combination`. The terms come from a function called at each use, so
    that the kernel's taps are sliced where they are used: sliced once and shared, XLA kept the
    backward pass's transformed kernels longer (temporaries 4.04 against 1.54 MiB in
    test_winograd_backward_keeps_no_transform_of_the_forward_pass).
    """
    size, n = weights.shape
    if rows_first:
        rows = [
            [_combination(weights[p], [term(a, b) for a in range(n)]) for b in range(n)]
            for p in range(size)
        ]
        return [[_combination(weights[q], rows[p]) for q in range(size)] for p in range(size)]
    cols = [
        [_combination(weights[q], [term(a, b) for b in range(n)]) for q in range(size)]
        for a in range(n)
    ]
    return [
        [_combination(weights[p], [cols[a][q] for a in range(n)]) for q in range(size)]
        for p in range(size)
    ]


def _winograd_kernel(kernel: jax.Array, rows_first: bool = True) -> list[list[jax.Array]]:
    """G g Gᵀ of a (3, 3, Cin, Cout) kernel: 16 (Cin, Cout) matrices, u[p][q], in float32.

    `rows_first=False` sums over the kernel's columns first: the same sums in another order.
    """
    # As sums of the kernel's taps, each matrix its own fusion: an einsum over the stacked taps
    # compiled to thin matmuls (Cin·Cout, 3)·(3, 4) and 16 slices of their result, 3-5 times the
    # time (the same values to the bit: G's weights are 0, ±1/2 and 1).
    kernel = kernel.astype(jnp.float32)
    return _transform(_F23_G, lambda a, b: kernel[a, b], rows_first)


# G with its columns reversed is G with rows 0 and 3 swapped, so the kernel turned by 180° with
# its channels swapped (the input gradient's) transforms to u[_F23_TURN[p]][_F23_TURN[q]]ᵀ.
_F23_TURN = (3, 1, 2, 0)


def _winograd_tiles(padded: jax.Array, rows_first: bool = True) -> list[list[jax.Array]]:
    """Bᵀ d B of the 4×4 tiles at stride 2 of (N, H + 2, W + 2, Cin): v[p][q], (N, H/2, W/2, Cin).

    `rows_first=False` sums over the tile's columns first: the same sums in another order.
    """
    height, width = padded.shape[1] - 2, padded.shape[2] - 2
    padded = padded.astype(jnp.float32)
    # d[a][b]: row a, column b of every tile.
    d = [[padded[:, a : a + height : 2, b : b + width : 2] for b in range(4)] for a in range(4)]
    return _transform(_F23_BT, lambda a, b: d[a][b], rows_first)


def _winograd_3x3(padded: jax.Array, u: list[list[jax.Array]], turned: bool = False) -> jax.Array:
    """'VALID' 3×3 conv of (N, H + 2, W + 2, Cin), H and W even, in float32.

    `u` is the kernel's `_winograd_kernel`; `turned` convolves with that kernel turned by 180°,
    its input and output channels swapped.
    """
    n, height, width, cin = padded.shape
    height, width = height - 2, width - 2
    v = _winograd_tiles(padded)

    def product(p: int, q: int) -> jax.Array:
        tiles = v[p][q].reshape(-1, cin)
        if not turned:
            return tiles @ u[p][q]
        matrix = u[_F23_TURN[p]][_F23_TURN[q]]  # (Cout, Cin) of this conv: contract its axis 1
        return lax.dot_general(tiles, matrix, (((1,), (1,)), ((), ())))

    m = [
        [product(p, q).reshape(n, height // 2, width // 2, -1) for q in range(4)] for p in range(4)
    ]
    y = _transform(_F23_AT, lambda p, q: m[p][q])
    # Output pixel (2t + i, 2s + j) is y[i][j] at tile (t, s).
    out = jnp.stack([jnp.stack(y[i], axis=3) for i in range(2)], axis=2)
    return out.reshape(n, height, width, -1)


def _winograd_weight_grad(padded: jax.Array, dy: jax.Array) -> jax.Array:
    """The (3, 3, Cin, Cout) kernel's gradient of `_winograd_3x3` for output gradient dy, float32.

    The forward pass's chain backwards: dM = A dY Aᵀ per 2×2 output block, dU = Vᵀ dM summed
    over tiles (16 matmuls of (Cin, tiles)·(tiles, Cout), 4/9 of the plain form's
    multiplications), dg = Gᵀ dU G.
    """
    cin, cout = padded.shape[-1], dy.shape[-1]
    dy = dy.astype(jnp.float32)
    e = [[dy[:, i::2, j::2] for j in range(2)] for i in range(2)]  # e[i][j]: (N, H/2, W/2, Cout)
    dm = _transform(_F23_AT.T, lambda i, j: e[i][j])
    # The tiles are recomputed rather than kept from the forward pass (4× the input, alive
    # until the backward pass), and summed in the other order: computed as in the forward pass,
    # XLA merged the two computations and kept them (the gradient of 8 residual convs in a
    # chain, 1×64×64×256: temporaries 200 MiB, 107 this way, 119 with XLA's weight gradient;
    # an optimization_barrier did not stop it).
    v = _winograd_tiles(padded, rows_first=False)
    du = [
        [
            lax.dot_general(
                v[p][q].reshape(-1, cin), dm[p][q].reshape(-1, cout), (((0,), (0,)), ((), ()))
            )
            for q in range(4)
        ]
        for p in range(4)
    ]
    return jnp.stack([jnp.stack(row) for row in _transform(_F23_G.T, lambda p, q: du[p][q])])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _winograd_conv(padded: jax.Array, kernel: jax.Array, weight_grad: str) -> jax.Array:
    return _winograd_3x3(padded, _winograd_kernel(kernel)).astype(padded.dtype)


def _winograd_conv_fwd(padded, kernel, weight_grad):
    return _winograd_conv(padded, kernel, weight_grad), (padded, kernel)


def _winograd_conv_bwd(weight_grad, residuals, dy):
    padded, kernel = residuals
    # The input gradient is the full correlation of dy with the kernel turned by 180°, its
    # channels swapped: a 'VALID' 3×3 conv of dy zero-padded by 2, in the same form. The
    # transformed kernel is recomputed rather than kept from the forward pass (16·Cin·Cout floats
    # per conv alive until the backward pass, for a sum of a few taps), its sums in the other
    # order: in the same order XLA merged the two and kept it all the same (the full-size
    # generator's gradient: temporaries 384 against 331 MiB).
    u = _winograd_kernel(kernel, rows_first=False)
    dy_padded = jnp.pad(dy, ((0, 0), (2, 2), (2, 2), (0, 0)))
    dx = _winograd_3x3(dy_padded, u, turned=True).astype(padded.dtype)
    if weight_grad == "winograd":
        dk = _winograd_weight_grad(padded, dy)
    else:
        (dk,) = jax.vjp(lambda k: conv2d(padded, k, weight_grad=weight_grad), kernel)[1](dy)
    return dx, dk.astype(kernel.dtype)


_winograd_conv.defvjp(_winograd_conv_fwd, _winograd_conv_bwd)


def _winograd_applies(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> bool:
    """Whether the "winograd" form computes this reflect conv (3×3, even height and width)."""
    return kernel_shape[:2] == (3, 3) and x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0


def reflect_conv(x: jax.Array, kernel: jax.Array, form: str, weight_grad: str = "xla") -> jax.Array:
    """Stride-1 conv with an odd kernel over the input reflect-padded by kernel // 2 (no bias)."""
    p = kernel.shape[0] // 2
    padded = reflect_pad(x, p)
    form = resolve_reflect_conv_form(form, kernel.shape[-1])
    if form == "winograd":
        if _winograd_applies(x.shape, kernel.shape):
            return _winograd_conv(padded, kernel, weight_grad)
        if kernel.shape[-1] <= TAPS_MAX_FEATURES:
            return taps_conv(padded, kernel, pixel_major=True)
        form = "valid"
    if form == "valid":
        return conv2d(padded, kernel, weight_grad=weight_grad)
    if form == "same_crop":  # 'SAME' padding
        return conv2d(padded, kernel, 1, ((p, p), (p, p)), weight_grad)[:, p:-p, p:-p]
    return taps_conv(padded, kernel)


class ReflectConv(nn.Module):
    """Reflection pad (kernel_size // 2) + stride-1 conv with bias, as nn.Conv's parameters."""

    features: int
    kernel_size: int
    form: str = "auto"
    weight_grad: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"ReflectConv needs an odd kernel, got {self.kernel_size}")
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return reflect_conv(x, kernel, self.form, self.weight_grad) + bias


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


# _SUBPIXEL_TAP read the other way round, per axis: output phase a -> ((kernel tap, input
# shift u), ...) without the zero tap, i.e. ((1, 0),) and ((0, 0), (2, 1)); and kernel tap i ->
# (the output phase it feeds, its input shift), for i = 0, 1, 2.
_PHASE_TAPS = tuple(
    tuple((int(_SUBPIXEL_TAP[u, a]), u) for u in (0, 1) if _SUBPIXEL_TAP[u, a] != 3) for a in (0, 1)
)
_TAP_PHASE = tuple(
    next((a, u) for a, taps in enumerate(_PHASE_TAPS) for t, u in taps if t == i) for i in range(3)
)


def _shift(a: jax.Array, du: int, dv: int) -> jax.Array:
    """a[:, h + du, w + dv], zero beyond the end."""
    return jnp.pad(a[:, du:, dv:], ((0, 0), (0, du), (0, dv), (0, 0)))


def _unshift(g: jax.Array, du: int, dv: int) -> jax.Array:
    """The transpose of `_shift`: g[:, h - du, w - dv], zero before the start."""
    _, h, w, _ = g.shape
    return jnp.pad(g[:, : h - du, : w - dv], ((0, 0), (du, 0), (dv, 0), (0, 0)))


def _taps_matrix(kernel: jax.Array, rows: tuple[int, ...]) -> jax.Array:
    """(3, 3, Cin, Cout) -> (Cin, len(rows)·3·Cout): the taps of those kernel rows, ordered
    (tap row, tap column, Cout)."""
    cin, cout = kernel.shape[2:]
    return kernel[np.asarray(rows)].transpose(2, 0, 1, 3).reshape(cin, len(rows) * 3 * cout)


def _phase_rows(a: int) -> tuple[int, ...]:
    """The kernel rows that output row phase a draws on."""
    return tuple(i for i, _ in _PHASE_TAPS[a])


def _phase_sum(z: jax.Array, a: int, b: int) -> jax.Array:
    """Output phase (a, b) from row phase a's taps z (N, H, W, rows, 3, Cout): the sum of its
    taps' slices, shifted."""
    return sum(
        _shift(z[:, :, :, r, j], du, dv)
        for r, (_, du) in enumerate(_PHASE_TAPS[a])
        for j, dv in _PHASE_TAPS[b]
    )


# One matmul per output row phase (3 and 6 taps), not one for all 9: their taps tensors are 0.75
# and 1.5 times the output, against 2.25 (study-scale step temporaries 833 against 866 MiB).
@jax.custom_vjp
def _upsample_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    phase_rows = []
    for a in (0, 1):
        rows = _phase_rows(a)
        z = jnp.matmul(
            x.reshape(-1, cin), _taps_matrix(kernel, rows), preferred_element_type=jnp.float32
        ).reshape(n, h, w, len(rows), 3, cout)
        phase_rows.append(jnp.stack([_phase_sum(z, a, b) for b in (0, 1)], 3))
    y = jnp.stack(phase_rows, 2)  # (N, H, a, W, b, Cout)
    return y.reshape(n, 2 * h, 2 * w, cout).astype(x.dtype)


def _upsample_taps_fwd(x, kernel):
    return _upsample_taps(x, kernel), (x, kernel)


def _upsample_taps_bwd(residuals, dy):
    x, kernel = residuals
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    g = dy.reshape(n, h, 2, w, 2, cout)
    x2d = x.reshape(-1, cin)
    dx, dk_rows = 0, {}
    for a in (0, 1):
        rows = _phase_rows(a)
        # Every tap feeds exactly one output phase: its gradient is that phase's, shifted back.
        dz = jnp.stack(
            [
                _unshift(g[:, :, a, :, b], du, dv)
                for _, du in _PHASE_TAPS[a]
                for b, dv in _TAP_PHASE  # kernel columns 0, 1, 2
            ],
            3,
        ).reshape(n * h * w, -1)
        taps = _taps_matrix(kernel, rows)
        dx = dx + jnp.matmul(dz, taps.T, preferred_element_type=jnp.float32)
        dk = jnp.matmul(x2d.T, dz, preferred_element_type=jnp.float32)
        dk = dk.reshape(cin, len(rows), 3, cout).transpose(1, 2, 0, 3)
        dk_rows.update({i: dk[r] for r, i in enumerate(rows)})
    dk = jnp.stack([dk_rows[i] for i in range(3)])
    return dx.reshape(x.shape).astype(x.dtype), dk.astype(kernel.dtype)


_upsample_taps.defvjp(_upsample_taps_fwd, _upsample_taps_bwd)


# ---- 3×3 stride-2 conv with padding 1, its input gradient as the taps transposed conv --------
_DOWNSAMPLE_PADDING = ((1, 1), (1, 1))


def _downsample_taps_applies(
    x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: int, padding: int
) -> bool:
    """Whether the "taps" downsampling form computes this conv (3×3, stride 2, pad 1, even map)."""
    return (
        kernel_shape[:2] == (3, 3)
        and (stride, padding) == (2, 1)
        and x_shape[1] % 2 == 0
        and x_shape[2] % 2 == 0
    )


@jax.custom_vjp
def _downsample_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _lax_conv(x, kernel, 2, _DOWNSAMPLE_PADDING)


def _downsample_taps_fwd(x, kernel):
    return _downsample_taps(x, kernel), (x, kernel)


def _downsample_taps_bwd(residuals, dy):
    x, kernel = residuals
    # y[m] = Σ_a x[2m + a - 1]·k[a], so dx[2m] = dy[m]·k[1] and dx[2m + 1] = dy[m]·k[2] +
    # dy[m + 1]·k[0]: per axis, the transposed conv's y[2m] = x[m]·k'[1], y[2m + 1] = x[m]·k'[0]
    # + x[m + 1]·k'[2] with k' = k reversed, its channels swapped.
    dx = _upsample_taps(dy, kernel[::-1, ::-1].swapaxes(2, 3)).astype(x.dtype)
    dk = _kernel_grad(x, dy, kernel.shape, 2, _DOWNSAMPLE_PADDING)
    return dx, dk.astype(kernel.dtype)


_downsample_taps.defvjp(_downsample_taps_fwd, _downsample_taps_bwd)


def conv_transpose_2x(
    x: jax.Array, kernel: jax.Array, form: str, weight_grad: str = "xla"
) -> jax.Array:
    """PyTorch ConvTranspose2d(3, stride=2, padding=1, output_padding=1) without bias: H -> 2H.

    `weight_grad` applies to the subpixel form; the taps form's weight gradient is a matmul.
    """
    form = resolve_upsample_form(form)
    if form == "transpose":
        return lax.conv_transpose(x, kernel, (2, 2), ((1, 2), (1, 2)), dimension_numbers=_DIMS)
    if form == "taps":
        return _upsample_taps(x, kernel)
    n, height, width, _ = x.shape
    cout = kernel.shape[-1]
    y = conv2d(x, subpixel_kernel(kernel), 1, ((0, 1), (0, 1)), weight_grad)  # (N, H, W, 4·C)
    y = y.reshape(n, height, width, 2, 2, cout)
    y = y.transpose(0, 1, 3, 2, 4, 5)  # (N, H, a_h, W, a_w, Cout)
    return y.reshape(n, 2 * height, 2 * width, cout)


class ConvTranspose2x(nn.Module):
    """3×3 stride-2 transposed conv with bias, PyTorch-aligned; parameters as nn.ConvTranspose."""

    features: int
    form: str = "auto"
    weight_grad: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv_transpose_2x(x, kernel, self.form, self.weight_grad) + bias


# ---- 3×3 max-pool, stride 2 (the classifier's stem) --------------------------------------------

MAX_POOL_FORMS = ("auto", "xla", "taps")


def _pool_taps(x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    """(9, N, Ho, Wo, C): the input under each tap of every 3×3 stride-2 window (padding 1,
    −inf), taps in row-major window order; and (Ho, Wo) = ⌈(H, W) / 2⌉."""
    _, h, w, _ = x.shape
    ho, wo = -(-h // 2), -(-w // 2)
    padded = jnp.pad(
        x, ((0, 0), (1, 2 * ho - h + 1), (1, 2 * wo - w + 1), (0, 0)), constant_values=-jnp.inf
    )
    taps = [padded[:, i : i + 2 * ho : 2, j : j + 2 * wo : 2] for i in range(3) for j in range(3)]
    return jnp.stack(taps), (ho, wo)


@jax.custom_vjp
def _max_pool_taps(x: jax.Array) -> jax.Array:
    return jnp.max(_pool_taps(x)[0], axis=0)


def _max_pool_taps_fwd(x):
    taps, _ = _pool_taps(x)
    # argmax takes the first maximum: the tap XLA's select-and-scatter picks on a tie.
    return jnp.max(taps, axis=0), (jnp.argmax(taps, axis=0).astype(jnp.int8), x.shape)


def _max_pool_taps_bwd(residuals, dy):
    winner, (n, h, w, c) = residuals
    _, ho, wo, _ = dy.shape
    dx = jnp.zeros((n, 2 * ho + 1, 2 * wo + 1, c), dy.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        part = jnp.where(winner == k, dy, 0)
        # Scatter onto every other row and column from (i, j): interior padding does it densely.
        config = ((0, 0, 0), (i, 2 - i, 1), (j, 2 - j, 1), (0, 0, 0))
        dx = dx + lax.pad(part, jnp.zeros((), dy.dtype), config)
    return (dx[:, 1 : h + 1, 1 : w + 1],)


_max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)


def max_pool_3x3_stride_2(x: jax.Array, form: str = "auto") -> jax.Array:
    """3×3 max-pool at stride 2 with padding 1 (borders never win), NHWC → ⌈H/2⌉ × ⌈W/2⌉.

    "xla" is `nn.max_pool`, whose gradient XLA CPU computes with a select-and-scatter that took
    ~40 % of the 64-px classifier step; "taps" takes the max of the 9 strided views and sends
    the gradient to the same winner (the first maximum of the window) by dense ops.
    """
    if _resolve(form, MAX_POOL_FORMS, "taps", "xla") == "xla":
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return _max_pool_taps(x)
