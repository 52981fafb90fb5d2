"""CycleGAN generator and discriminator: sizes, parameter counts, and the fast layer forms."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from xrayjax.build import LARGE_CPU_STEP_FORMS
from xrayjax.models import PatchDiscriminator, ResnetGenerator
from xrayjax.models.generator import bernoulli_mask
from xrayjax.models.layers import (
    ConvTranspose2x,
    PaddedConv,
    ReflectConv,
    conv2d,
    conv_transpose_2x,
    instance_norm,
    reflect_conv,
    reflect_pad,
    resolve_reflect_conv_form,
    resolve_weight_grad_form,
    taps_conv,
)

TINY = dict(features=8, num_blocks=2)


def _key(seed: int) -> jax.Array:
    # XLA's RngBitGenerator compiles ~7x faster on CPU than the default threefry, which would
    # dominate these tests' time; the models do not depend on the key's implementation.
    return jax.random.key(seed, impl="rbg")


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _init_shapes(model, shape, **kwargs):
    return jax.eval_shape(lambda: model.init(_key(0), jnp.zeros(shape), **kwargs))


def _random(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * scale)


def _torch_conv_transpose(x, weight):
    """PyTorch ConvTranspose2d(k=3, s=2, padding=1, output_padding=1), no bias, in numpy.

    x: (N, H, W, Cin); weight: (Cin, Cout, 3, 3) as PyTorch stores it. Input pixel i reaches
    output 2i - padding + k; output_padding adds the last row/column.
    """
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    n, h, w, _ = x.shape
    full = np.zeros((n, 2 * h + 1, 2 * w + 1, weight.shape[1]))
    for kh in range(3):
        for kw in range(3):
            full[:, kh : kh + 2 * h : 2, kw : kw + 2 * w : 2] += x @ weight[:, :, kh, kw]
    return full[:, 1 : 2 * h + 1, 1 : 2 * w + 1]


# ---- the thesis models at full size (shapes only, no compute) -----------------------------------


def test_default_parameter_counts():
    gen = _init_shapes(ResnetGenerator(), (1, 256, 256, 1), train=False)
    disc = _init_shapes(PatchDiscriminator(), (1, 256, 256, 1))
    assert set(gen) == {"params"} and set(disc) == {"params"}  # no batch stats, no norm params
    assert _count(gen) == 11_365_633
    assert _count(disc) == 2_762_689


def test_default_output_shapes():
    x = jax.ShapeDtypeStruct((2, 256, 256, 1), jnp.float32)
    gen, disc = ResnetGenerator(), PatchDiscriminator()
    gen_vars = _init_shapes(gen, x.shape, train=False)
    disc_vars = _init_shapes(disc, x.shape)
    y = jax.eval_shape(lambda v, x: gen.apply(v, x, train=False), gen_vars, x)
    assert (y.shape, y.dtype) == ((2, 256, 256, 1), jnp.float32)
    scores = jax.eval_shape(disc.apply, disc_vars, x)
    assert (scores.shape, scores.dtype) == ((2, 30, 30, 1), jnp.float32)


def test_only_conv_kernels_and_biases_no_norm_params():
    variables = _init_shapes(ResnetGenerator(), (1, 256, 256, 1), train=False)
    paths = [tuple(k.key for k in path) for path, _ in jax.tree.flatten_with_path(variables)[0]]
    assert {p[-1] for p in paths} == {"kernel", "bias"}
    assert len(paths) == 2 * (1 + 2 + 2 * 9 + 2 + 1)  # every conv has a kernel and a bias
    norm = instance_norm()
    assert (norm.epsilon, norm.use_scale, norm.use_bias) == (1e-5, False, False)


# ---- tiny generator -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_params():
    """Parameters of ResnetGenerator(**TINY) for 1-channel images, initialised once."""
    init = jax.jit(ResnetGenerator(**TINY).init, static_argnames="train")
    return init(_key(0), jnp.zeros((1, 32, 32, 1)), train=False)["params"]


def test_generator_tiny_shape_range_and_init(tiny_params):
    model = ResnetGenerator(**TINY)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)), jnp.float32)
    y = jax.jit(model.apply, static_argnames="train")({"params": tiny_params}, x, train=False)
    assert y.shape == (2, 32, 32, 1) and y.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(y))) < 1.0
    for path, leaf in jax.tree.flatten_with_path(tiny_params)[0]:
        if path[-1].key == "bias":
            assert not np.any(np.asarray(leaf))
    kernel = np.asarray(tiny_params["block_0"]["conv_0"]["kernel"])  # 3·3·32·32 = 9216 samples
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    up_kernel = np.asarray(tiny_params["up_0"]["kernel"])  # the transposed convs' own init
    assert abs(up_kernel.std() - 0.02) < 0.002


def test_generator_dropout(tiny_params):
    variables = {"params": tiny_params}
    x = _random((1, 32, 32, 1))
    apply = jax.jit(ResnetGenerator(**TINY).apply, static_argnames="train")
    eval_a = apply(variables, x, train=False)
    eval_b = apply(variables, x, train=False, rngs={"dropout": _key(5)})
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = apply(variables, x, train=True, rngs={"dropout": _key(1)})
    train_b = apply(variables, x, train=True, rngs={"dropout": _key(2)})
    train_a2 = apply(variables, x, train=True, rngs={"dropout": _key(1)})
    assert not np.allclose(train_a, train_b)
    assert not np.allclose(train_a, eval_a)
    np.testing.assert_array_equal(train_a, train_a2)
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        apply(variables, x, train=True)
    no_dropout = jax.jit(ResnetGenerator(**TINY, dropout_rate=0.0).apply, static_argnames="train")
    np.testing.assert_allclose(no_dropout(variables, x, train=True), eval_a, atol=1e-6)


def test_drawn_dropout_masks_are_the_per_example_draws(tiny_params):
    model = ResnetGenerator(**TINY)
    variables = {"params": tiny_params}
    x = _random((3, 32, 32, 1))
    # threefry, the GAN step's keys (rbg's draws under vmap differ from its draws without)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(3))
    masks = jax.jit(model.draw_dropout_masks, static_argnums=1)(keys, x.shape[1:])
    assert masks.shape == (2, 3, 8, 8, 32) and masks.dtype == jnp.bool_
    assert 0.75 < float(masks.mean()) < 0.85  # keep probability 0.8
    apply = jax.jit(model.apply, static_argnames="train")
    for n in range(3):  # each example: the same output to the bit as with its key
        keyed = apply(variables, x[n : n + 1], train=True, rngs={"dropout": keys[n]})
        drawn = apply(variables, x[n : n + 1], train=True, dropout_masks=masks[:, n : n + 1])
        np.testing.assert_array_equal(drawn, keyed)
    whole = apply(variables, x, train=True, dropout_masks=masks)
    per_example = jax.vmap(
        lambda image, key: apply(variables, image[None], train=True, rngs={"dropout": key})[0]
    )(x, keys)
    np.testing.assert_allclose(whole, per_example, rtol=0, atol=1e-6)
    assert not np.allclose(whole, apply(variables, x, train=False))


@pytest.mark.parametrize("shape", [(1, 8, 8, 32), (3, 5, 7), (1,)])
@pytest.mark.parametrize("keep_prob", [0.8, 0.5, 0.03])
def test_bernoulli_mask_is_jax_bernoulli_to_the_bit(shape, keep_prob):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(4))
    draw = jax.jit(jax.vmap(lambda k: bernoulli_mask(k, keep_prob, shape)))
    reference = jax.jit(jax.vmap(lambda k: jax.random.bernoulli(k, keep_prob, shape)))
    np.testing.assert_array_equal(draw(keys), reference(keys))
    legacy = jax.random.PRNGKey(11)  # a raw uint32 key
    np.testing.assert_array_equal(
        bernoulli_mask(legacy, keep_prob, shape), jax.random.bernoulli(legacy, keep_prob, shape)
    )
    other = jax.random.key(11, impl="rbg")  # not threefry: jax's own draw
    np.testing.assert_array_equal(
        bernoulli_mask(other, keep_prob, shape), jax.random.bernoulli(other, keep_prob, shape)
    )


def test_bernoulli_mask_draws_threefry_keys_without_jax_random_bits():
    def primitives(key):
        return str(jax.make_jaxpr(lambda k: bernoulli_mask(k, 0.8, (4, 4)))(key))

    assert "random_bits" not in primitives(jax.random.key(0))  # written out
    assert "random_bits" not in primitives(jax.random.PRNGKey(0))
    assert "random_bits" in primitives(jax.random.key(0, impl="rbg"))  # jax's own draw


def test_generator_forms_agree_values_and_gradients(tiny_params):
    x = _random((1, 32, 32, 1))

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_grad(forms, params):
        reflect_conv, upsample, downsample, weight_grad = forms
        model = ResnetGenerator(
            **TINY,
            reflect_conv=reflect_conv,
            upsample=upsample,
            downsample=downsample,
            weight_grad=weight_grad,
        )
        return jax.value_and_grad(
            lambda p: jnp.sum(model.apply({"params": p}, x, train=False) ** 2)
        )(params)

    ref_value, ref_grad = value_and_grad(("valid", "transpose", "conv", "xla"), tiny_params)
    # convs feeding an instance norm have ~0 bias gradients: compare on the gradients' scale
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grad))
    # "auto" on CPU: valid stem and blocks, taps head and upsampling, XLA's weight gradients;
    # then a large CPU step's forms
    fields = ("reflect_conv", "upsample", "downsample", "weight_grad")
    large = tuple(LARGE_CPU_STEP_FORMS.get(field, "auto") for field in fields)
    for forms in [("auto", "auto", "auto", "auto"), large]:
        value, grad = value_and_grad(forms, tiny_params)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad), strict=True):
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-5 * scale)


def test_bfloat16_compute_float32_params(tiny_params):
    model = ResnetGenerator(**TINY, dtype=jnp.bfloat16)
    x = _random((1, 32, 32, 1))
    shapes = _init_shapes(model, x.shape, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}

    @jax.jit
    def run(params):
        y = model.apply({"params": params}, x, train=False)
        return y, ResnetGenerator(**TINY).apply({"params": params}, x, train=False)

    y, ref = run(tiny_params)
    assert y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.max(jnp.abs(y - ref))) < 0.1
    # bfloat16 gradients through every custom form: test_custom_forms_bfloat16_gradients

    disc = PatchDiscriminator(features=8, dtype=jnp.bfloat16)
    x = _random((1, 64, 64, 1))
    disc_params = jax.jit(disc.init)(_key(0), x)["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(disc_params)} == {jnp.dtype(jnp.float32)}
    scores = jax.jit(disc.apply)({"params": disc_params}, x)
    assert scores.shape == (1, 6, 6, 1) and scores.dtype == jnp.float32


# ---- discriminator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_layers, size, out_pixel, field",
    [(3, 104, 7, 70), (4, 192, 6, 142)],
)
def test_discriminator_receptive_field(n_layers, size, out_pixel, field):
    # Instance norm couples every pixel of a channel, so the field is read with norms off.
    model = PatchDiscriminator(features=4, n_layers=n_layers, use_norm=False)
    x = _random((1, size, size, 1))
    params = jax.jit(model.init)(_key(0), x)["params"]
    pixel = jax.jit(
        jax.grad(lambda x: model.apply({"params": params}, x)[0, out_pixel, out_pixel, 0])
    )
    grad = pixel(x)
    rows, cols = np.nonzero(np.asarray(grad[0, :, :, 0]))
    # 4×4 kernels: field = 1 + 3·(sum of jumps); the window starts at o·2^n_layers - sum of jumps
    start = out_pixel * 2**n_layers - (field - 1) // 3
    assert (rows.min(), rows.max() + 1) == (start, start + field)
    assert (cols.min(), cols.max() + 1) == (start, start + field)
    assert rows.size == field * field  # nonzero on the whole window


def test_discriminator_depth_and_params():
    for n_layers, convs in ((3, 5), (4, 6)):
        variables = _init_shapes(PatchDiscriminator(n_layers=n_layers), (1, 256, 256, 1))
        assert len(variables["params"]) == convs
    variables = _init_shapes(PatchDiscriminator(n_layers=4), (1, 256, 256, 1))
    # extra 4×4 conv 512->512 (stride 2) before the stride-1 conv, which stays 512 (multiplier ≤ 8)
    assert _count(variables) == 2_762_689 + 16 * 512 * 512 + 512
    scores = jax.eval_shape(
        PatchDiscriminator(n_layers=4).apply, variables, jnp.zeros((1, 256, 256, 1))
    )
    assert scores.shape == (1, 14, 14, 1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _value_and_grads(layer, form, x, kernel, cotangent):
    """layer(x, kernel, form), and the input and kernel gradients of <that, cotangent>."""
    y, vjp = jax.vjp(lambda x, k: layer(x, k, form), x, kernel)
    return (y, *vjp(cotangent))


# ---- layer forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["subpixel", "taps"])
def test_upsampling_forms_equal_transpose_and_pytorch(form):
    x = _random((2, 5, 6, 8), seed=1)
    kernel = _random((3, 3, 8, 4), seed=2, scale=0.3)
    transpose = conv_transpose_2x(x, kernel, "transpose")
    fast = conv_transpose_2x(x, kernel, form)
    assert fast.shape == (2, 10, 12, 4)
    np.testing.assert_allclose(fast, transpose, atol=1e-5)
    # PyTorch's weight (Cin, Cout, kh, kw) is the flax kernel flipped in space
    weight = np.asarray(kernel)[::-1, ::-1].transpose(2, 3, 0, 1)
    torch_reference = _torch_conv_transpose(x, weight)
    np.testing.assert_allclose(fast, torch_reference, atol=1e-5)
    np.testing.assert_allclose(transpose, torch_reference, atol=1e-5)

    # the module has nn.ConvTranspose's parameters, and with padding ((1, 2), (1, 2)) its values
    module = ConvTranspose2x(4, form=form)
    flax_transpose = nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)))
    shapes = [jax.eval_shape(m.init, _key(0), x) for m in (module, flax_transpose)]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    assert jax.tree.leaves(shapes[0]) == jax.tree.leaves(shapes[1])
    params = {"kernel": kernel, "bias": _random((4,), seed=3)}
    np.testing.assert_allclose(
        module.apply({"params": params}, x),
        flax_transpose.apply({"params": params}, x),
        atol=1e-5,
    )


@pytest.mark.parametrize("form", ["subpixel", "taps"])
def test_upsampling_forms_gradients_equal(form):
    x = _random((2, 6, 5, 8), seed=1)
    kernel = _random((3, 3, 8, 4), seed=2, scale=0.3)
    cotangent = _random((2, 12, 10, 4), seed=4)
    fast = _value_and_grads(conv_transpose_2x, form, x, kernel, cotangent)
    transpose = _value_and_grads(conv_transpose_2x, "transpose", x, kernel, cotangent)
    for a, b in zip(fast, transpose, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)

    # one image at a time under vmap, as the GAN step calls the generator: the same gradients
    def loss(x, k):
        per_image = jax.vmap(lambda image: conv_transpose_2x(image[None], k, form)[0])
        return jnp.sum(per_image(x) * cotangent)

    dx, dk = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)
    np.testing.assert_allclose(dx, transpose[1], atol=1e-5)
    np.testing.assert_allclose(dk, transpose[2], atol=1e-5)


@pytest.mark.parametrize(
    "pad, shape",
    [
        (1, (2, 9, 12, 16)),
        (3, (1, 20, 16, 4)),
        (3, (1, 8, 11, 3)),  # the smallest maps that take the one-pass transpose
        (3, (1, 11, 7, 3)),  # a pixel narrower: the borders' copies meet, autodiff's transpose
        (1, (2, 3, 6, 4)),
    ],
)
def test_reflect_pad_gradient_is_autodiffs_to_the_bit(pad, shape):
    x = _random(shape, seed=1)
    plain = functools.partial(jnp.pad, pad_width=((0, 0), (pad, pad), (pad, pad), (0, 0)))
    padded = reflect_pad(x, pad)
    np.testing.assert_array_equal(padded, plain(x, mode="reflect"))
    cotangent = _random(padded.shape, seed=2)
    (grad,) = jax.jit(lambda x, c: jax.vjp(lambda x: reflect_pad(x, pad), x)[1](c))(x, cotangent)
    (ref,) = jax.jit(lambda x, c: jax.vjp(lambda x: plain(x, mode="reflect"), x)[1](c))(
        x, cotangent
    )
    # Same sums in the same order: no result moves with the faster transpose.
    np.testing.assert_array_equal(grad, ref)
    # Each input pixel's gradient is the sum of the cotangent at every padded pixel copying it.
    source = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
    copies = plain(source, mode="reflect")
    expected = jax.ops.segment_sum(
        cotangent.reshape(-1), copies.reshape(-1).astype(jnp.int32), num_segments=x.size
    ).reshape(x.shape)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel_size, cin, cout", [(3, 16, 16), (7, 8, 1), (7, 1, 8)])
def test_same_crop_conv_equals_valid_conv(kernel_size, cin, cout):
    x = _random((2, 20, 24, cin), seed=1)
    kernel = _random((kernel_size, kernel_size, cin, cout), seed=2, scale=0.1)
    valid = reflect_conv(x, kernel, "valid")
    assert valid.shape == (2, 20, 24, cout)
    same_crop = reflect_conv(x, kernel, "same_crop")
    # bit-identical on XLA CPU as measured; the tolerance only guards against other XLA versions
    np.testing.assert_allclose(same_crop, valid, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "shape, cout, weight_grad",
    [
        ((2, 8, 12, 16), 16, "xla"),
        ((1, 6, 6, 8), 24, "matmul"),
        ((3, 4, 10, 5), 3, "xla"),
        ((2, 8, 12, 16), 16, "winograd"),
        ((3, 4, 10, 5), 3, "winograd"),
    ],
)
def test_winograd_conv_equals_valid_conv_with_gradients(shape, cout, weight_grad):
    x = _random(shape, seed=1)
    kernel = _random((3, 3, shape[-1], cout), seed=2, scale=0.1)
    cotangent = _random((*shape[:3], cout), seed=3)

    def layer(x, k, form):
        return reflect_conv(x, k, form, weight_grad)

    winograd = _value_and_grads(layer, "winograd", x, kernel, cotangent)
    valid = _value_and_grads(layer, "valid", x, kernel, cotangent)
    for a, b in zip(winograd, valid, strict=True):  # output, input gradient, kernel gradient
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))))
    assert not np.array_equal(winograd[0], valid[0])  # computed otherwise, not handed on
    # The kernel gradient in Winograd's form too, or XLA's (that of "valid" to the bit).
    assert np.array_equal(winograd[2], valid[2]) == (weight_grad != "winograd")


def _chain_gradient_temporaries(shape, depth, weight_grad):
    """MiB of temporaries of the gradient of `depth` chained Winograd convs, as a large step's."""
    from xrayjax import parallel

    x, kernels = jnp.zeros(shape), [jnp.zeros((3, 3, shape[-1], shape[-1]))] * depth

    def chain(kernels, x):
        for kernel in kernels:
            x = jnp.sin(reflect_conv(x, kernel, "winograd", weight_grad))
        return jnp.sum(x)

    lowered = jax.jit(jax.grad(chain)).lower(kernels, x)
    compiled = lowered.compile(parallel.large_cpu_step_options())
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def test_winograd_backward_keeps_no_transform_of_the_forward_pass():
    # Where the backward pass recomputed a transform exactly as the forward pass had, XLA merged
    # the two and kept the forward's until the backward pass. The input tiles' (4× the input):
    # Winograd's weight gradient then needed 1.58 MiB here against 0.94 for XLA's.
    tiles = _chain_gradient_temporaries((1, 16, 16, 64), 4, "winograd")
    assert tiles <= 1.2 * _chain_gradient_temporaries((1, 16, 16, 64), 4, "xla")
    # The transformed kernel's (16·Cin·Cout floats, 1 MiB per conv here): 5.3 MiB when kept.
    assert _chain_gradient_temporaries((1, 8, 8, 128), 6, "xla") < 2.0


@pytest.mark.parametrize(
    "shape, kernel_size, cout, fallback",
    [((1, 7, 8, 4), 3, 8, "valid"), ((1, 8, 8, 4), 7, 8, "valid"), ((1, 8, 8, 4), 7, 1, "taps")],
)
def test_winograd_form_takes_another_form_where_it_does_not_apply(
    shape, kernel_size, cout, fallback
):
    # Odd maps and other kernels take the plain conv, convs to a few channels the taps form
    # with its products pixel-major.
    x = _random(shape, seed=1)
    kernel = _random((kernel_size, kernel_size, 4, cout), seed=2, scale=0.1)
    cotangent = _random((*shape[:3], cout), seed=3)

    def pixel_major_taps(x, k, _):
        return taps_conv(reflect_pad(x, kernel_size // 2), k, pixel_major=True)

    winograd = _value_and_grads(reflect_conv, "winograd", x, kernel, cotangent)
    layer = reflect_conv if fallback == "valid" else pixel_major_taps
    expected = _value_and_grads(layer, fallback, x, kernel, cotangent)
    other = _value_and_grads(
        reflect_conv, {"valid": "taps", "taps": "valid"}[fallback], x, kernel, cotangent
    )
    for a, b in zip(winograd, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(winograd, other, strict=True))


@pytest.mark.parametrize("cin, cout", [(8, 1), (5, 3)])
def test_pixel_major_taps_conv_equals_tap_major_and_valid(cin, cout):
    x = _random((2, 14, 12, cin), seed=1)
    kernel = _random((7, 7, cin, cout), seed=2, scale=0.1)
    cotangent = _random((2, 8, 6, cout), seed=3)

    def layer(x, k, pixel_major):
        return taps_conv(x, k, pixel_major=pixel_major)

    pixel_major = _value_and_grads(layer, True, x, kernel, cotangent)
    tap_major = _value_and_grads(layer, False, x, kernel, cotangent)
    valid = _value_and_grads(lambda x, k, _: conv2d(x, k), None, x, kernel, cotangent)
    for a, b, c in zip(pixel_major, tap_major, valid, strict=True):
        assert a.shape == c.shape
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(c))))
        np.testing.assert_allclose(b, c, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(c))))


def _padded_conv(cout: int, kernel_size: int, stride: int, padding: int):
    """PaddedConv as layer(x, kernel, form), bias 0; "conv" with XLA's weight gradient is plain."""

    def layer(x, k, form):
        conv = PaddedConv(cout, kernel_size, stride, padding, weight_grad="xla", form=form)
        return conv.apply({"params": {"kernel": k, "bias": jnp.zeros(cout)}}, x)

    return layer


@pytest.mark.parametrize("shape, cout", [((2, 8, 12, 5), 7), ((1, 16, 16, 8), 16)])
def test_downsample_taps_equals_the_strided_conv_with_gradients(shape, cout):
    x = _random(shape, seed=1)
    kernel = _random((3, 3, shape[-1], cout), seed=2, scale=0.1)
    cotangent = _random((shape[0], shape[1] // 2, shape[2] // 2, cout), seed=3)

    layer = _padded_conv(cout, 3, stride=2, padding=1)
    taps = _value_and_grads(layer, "taps", x, kernel, cotangent)
    conv = _value_and_grads(layer, "conv", x, kernel, cotangent)
    for a, b in zip(taps, conv, strict=True):  # output, input gradient, kernel gradient
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(b))))
    # the custom VJP is what runs: its gradients are the taps transposed conv and matmuls
    jaxpr = str(jax.make_jaxpr(lambda x: layer(x, kernel, "taps"))(x))
    assert "custom_vjp_call" in jaxpr and "custom_vjp_call" not in str(
        jax.make_jaxpr(lambda x: layer(x, kernel, "conv"))(x)
    )


@pytest.mark.parametrize(
    "shape, kernel_size, stride, padding",
    [((1, 7, 8, 4), 3, 2, 1), ((1, 8, 8, 4), 4, 2, 1), ((1, 8, 8, 4), 3, 1, 1)],
)
def test_downsample_taps_takes_the_plain_conv_where_it_does_not_apply(
    shape, kernel_size, stride, padding
):
    x = _random(shape, seed=1)
    kernel = _random((kernel_size, kernel_size, 4, 3), seed=2, scale=0.1)

    layer = _padded_conv(3, kernel_size, stride, padding)
    cotangent = jnp.ones_like(layer(x, kernel, "conv"))
    taps = _value_and_grads(layer, "taps", x, kernel, cotangent)
    conv = _value_and_grads(layer, "conv", x, kernel, cotangent)
    for a, b in zip(taps, conv, strict=True):
        np.testing.assert_array_equal(a, b)


def test_taps_conv_equals_valid_conv_with_gradients():
    x = _random((2, 20, 24, 8), seed=1)
    kernel = _random((5, 5, 8, 2), seed=2, scale=0.1)
    cotangent = _random((2, 20, 24, 2), seed=3)
    taps = _value_and_grads(reflect_conv, "taps", x, kernel, cotangent)
    valid = _value_and_grads(reflect_conv, "valid", x, kernel, cotangent)
    for a, b in zip(taps, valid, strict=True):  # output, input gradient, kernel gradient
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize(
    "kernel_size, stride, padding, cin, cout",
    [
        (3, 1, ((1, 1), (1, 1)), 32, 8),  # per-tap matmuls (kh·kw·Cin > 256)
        (7, 1, ((0, 0), (0, 0)), 1, 8),  # one im2col matmul
        (3, 2, ((1, 1), (1, 1)), 8, 4),
        (4, 2, ((1, 1), (1, 1)), 32, 4),
        (2, 1, ((0, 1), (0, 1)), 64, 12),
    ],
)
def test_matmul_weight_grad_equals_autodiff(kernel_size, stride, padding, cin, cout):
    x = _random((2, 12, 14, cin), seed=1)
    kernel = _random((kernel_size, kernel_size, cin, cout), seed=2, scale=0.1)
    y = conv2d(x, kernel, stride, padding)
    cotangent = _random(y.shape, seed=3)

    def layer(x, k, weight_grad):
        return conv2d(x, k, stride, padding, weight_grad)

    matmul = _value_and_grads(layer, "matmul", x, kernel, cotangent)
    xla = _value_and_grads(layer, "xla", x, kernel, cotangent)
    for a, b in zip(matmul, xla, strict=True):  # output, input gradient, kernel gradient
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))))
    np.testing.assert_array_equal(matmul[0], y)


@pytest.mark.parametrize(
    "features, expected",
    [
        (1, "taps"),  # the generator's last conv
        (4, "taps"),
        (8, "valid"),  # the demo's stem
        (128, "valid"),  # the 32-feature residual blocks at 128 px
    ],
)
def test_auto_reflect_conv_and_weight_gradient_forms(features, expected):
    on_cpu = jax.default_backend() == "cpu"  # elsewhere "auto" is the plain form everywhere
    assert resolve_reflect_conv_form("auto", features) == (expected if on_cpu else "valid")
    assert resolve_reflect_conv_form("same_crop", features) == "same_crop"
    # XLA's own weight gradient on every backend; the matmul form only where asked for
    assert resolve_weight_grad_form("auto") == "xla"
    assert resolve_weight_grad_form("matmul") == "matmul"


@pytest.mark.parametrize(
    "layer, form, kernel_shape",
    [
        (conv2d, "matmul", (3, 3, 32, 8)),
        (reflect_conv, "taps", (3, 3, 32, 1)),
        (conv_transpose_2x, "subpixel", (3, 3, 32, 8)),
        (conv_transpose_2x, "taps", (3, 3, 32, 8)),
    ],
)
def test_custom_forms_bfloat16_gradients(layer, form, kernel_shape):
    x = _random((1, 8, 8, 32), seed=1)
    kernel = _random(kernel_shape, seed=2, scale=0.1)

    def apply(x, kernel, dtype):
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        if layer is conv2d:
            return conv2d(x, kernel, 1, ((1, 1), (1, 1)), form)
        kwargs = {"weight_grad": "matmul"} if layer is conv_transpose_2x else {}
        return layer(x, kernel, form, **kwargs)

    y = jax.eval_shape(functools.partial(apply, dtype=jnp.float32), x, kernel)
    cotangent = _random(y.shape, seed=3)
    value, dx, dk = _value_and_grads(apply, jnp.bfloat16, x, kernel, cotangent.astype(jnp.bfloat16))
    assert value.dtype == jnp.bfloat16 and dx.dtype == dk.dtype == jnp.float32
    ref_value, ref_dx, ref_dk = _value_and_grads(apply, jnp.float32, x, kernel, cotangent)
    for a, b in ((value, ref_value), (dx, ref_dx), (dk, ref_dk)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(a, b, rtol=0, atol=0.03 * np.abs(b).max())


def test_matmul_weight_grad_on_sharded_batch():
    # The matmul weight gradient sums over the batch; under jit with the batch split over the 4
    # fake devices the compiler must add the cross-device sum.
    x = _random((4, 16, 16, 8), seed=1)
    kernel = _random((3, 3, 8, 16), seed=2, scale=0.1)
    cotangent = _random((4, 8, 8, 16), seed=3)
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    batch = NamedSharding(mesh, P("data"))
    sharded = _value_and_grads(
        _conv_stride_2,
        "matmul",
        jax.device_put(x, batch),
        jax.device_put(kernel, NamedSharding(mesh, P())),
        jax.device_put(cotangent, batch),
    )
    single = _value_and_grads(_conv_stride_2, "xla", x, kernel, cotangent)
    for a, b in zip(sharded, single, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def _conv_stride_2(x, kernel, weight_grad):
    return conv2d(x, kernel, 2, ((1, 1), (1, 1)), weight_grad)


def test_reflect_conv_module_and_bad_forms():
    x = _random((1, 8, 8, 3))
    module = ReflectConv(4, 3, form="same_crop")
    params = module.init(_key(0), x)["params"]
    assert params["kernel"].shape == (3, 3, 3, 4) and params["bias"].shape == (4,)
    with pytest.raises(ValueError, match="form"):
        ReflectConv(4, 3, form="mirror").apply({"params": params}, x)
    with pytest.raises(ValueError, match="form"):
        conv_transpose_2x(x, jnp.zeros((3, 3, 3, 2)), "nearest")
    with pytest.raises(ValueError, match="form"):
        conv2d(x, jnp.zeros((3, 3, 3, 2)), weight_grad="fast")
    # PaddedConv has nn.Conv's parameters and, with PyTorch-style padding, its values
    conv = PaddedConv(4, 3, stride=2, padding=1)
    flax_conv = nn.Conv(4, (3, 3), strides=2, padding=((1, 1), (1, 1)))
    shapes = [jax.eval_shape(m.init, _key(0), x) for m in (conv, flax_conv)]
    assert jax.tree.leaves(shapes[0]) == jax.tree.leaves(shapes[1])
    variables = {"params": {"kernel": _random((3, 3, 3, 4), seed=4), "bias": _random((4,))}}
    np.testing.assert_allclose(
        conv.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-6, atol=1e-6
    )


@pytest.mark.gpu
def test_layer_forms_agree_on_accelerator():
    x = _random((2, 32, 32, 64), seed=1)
    kernel = _random((3, 3, 64, 32), seed=2, scale=0.05)
    cotangent = _random((2, 64, 64, 32), seed=3)
    subpixel = _value_and_grads(conv_transpose_2x, "subpixel", x, kernel, cotangent)
    transpose = _value_and_grads(conv_transpose_2x, "transpose", x, kernel, cotangent)
    # GPUs may run convs with TF32 or other reduced-precision matmuls: compare on each scale
    for a, b in zip(subpixel, transpose, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=3e-3 * float(jnp.max(jnp.abs(b))))
    head = _random((7, 7, 64, 1), seed=4, scale=0.02)
    head_cotangent = _random((2, 32, 32, 1), seed=5)
    valid = _value_and_grads(reflect_conv, "valid", x, head, head_cotangent)
    for form in ("same_crop", "taps"):
        other = _value_and_grads(reflect_conv, form, x, head, head_cotangent)
        for a, b in zip(other, valid, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=3e-3 * float(jnp.max(jnp.abs(b))))
