"""Time every form of the CycleGAN layers, and the whole models, forward and forward+backward.

    python -m xrayjax.tools.profile_layers [--sizes 128 256] [--batch 1] [--features 64]
        [--repeats 5] [--only block generator ...]

Each row is one layer of the generator (or a whole model) at its place in a network fed a
SIZE×SIZE×1 image, with FEATURES channels after the first conv (64, the thesis's, by default;
the discriminator's first conv has as many). fwd+bwd is the value and gradient of a scalar loss
with respect to the parameters and the input, as in a GAN step. Times are the minimum over repeats,
after one compiling call, in milliseconds; a star marks the form "auto" picks on this backend. Use
this to re-check the defaults in layers.py on a new machine or backend.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xrayjax.models.discriminator import PatchDiscriminator
from xrayjax.models.generator import ResnetGenerator
from xrayjax.models.layers import (
    PLAIN_FORMS,
    ConvTranspose2x,
    PaddedConv,
    ReflectConv,
    resolve_downsample_form,
    resolve_reflect_conv_form,
    resolve_upsample_form,
    resolve_weight_grad_form,
)


def _compile(module: nn.Module, x: jax.Array, **kwargs) -> tuple[Callable, Callable, tuple]:
    """Jitted forward and value-and-gradient (w.r.t. parameters and input) of `module` at x."""
    # RngBitGenerator keys: their init compiles in a fraction of threefry's time on CPU
    rngs = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}
    params = jax.jit(functools.partial(module.init, **kwargs))(rngs, x)["params"]

    def forward(params, x):
        return module.apply({"params": params}, x, rngs=rngs, **kwargs)

    def loss(params, x):
        return jnp.mean(jnp.square(forward(params, x).astype(jnp.float32)))

    fns = (jax.jit(forward), jax.jit(jax.value_and_grad(loss, argnums=(0, 1))))
    for fn in fns:
        jax.block_until_ready(fn(params, x))  # compile
    return (*fns, (params, x))


def _time_group(modules: list[tuple[nn.Module, dict]], x: jax.Array, repeats: int) -> list:
    """Per module: best seconds of (fwd wall, fwd+bwd wall, fwd+bwd process CPU time).

    The modules take turns, so that a machine busy with other work slows them all alike; the
    minimum over rounds filters the noise, and CPU time (all threads) is less sensitive to it.
    """
    compiled = [_compile(module, x, **kwargs) for module, kwargs in modules]
    best = [[float("inf")] * 3 for _ in modules]
    for _ in range(repeats):
        for times, (forward, value_and_grad, args) in zip(best, compiled, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(forward(*args))
            times[0] = min(times[0], time.perf_counter() - start)
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(value_and_grad(*args))
            times[1] = min(times[1], time.perf_counter() - start)
            times[2] = min(times[2], time.process_time() - start_cpu)
    return best


_SHORT = {"xla": "xla", "matmul": "mm", "winograd": "wino"}


def _layer_cases(size: int, f: int = 64) -> list[tuple[str, str, bool, Callable, tuple]]:
    """(layer, form, picked by "auto", module factory, input shape without batch) per layer form.

    A form reads "<form>/<weight gradient>", e.g. "same_crop/mm" (mm: matmul, xla: autodiff,
    wino: Winograd's).
    """
    cases = []
    auto_weight_grad = resolve_weight_grad_form("auto")  # the same for every conv

    def add(name, shape, forms, make):
        """forms: (form, weight_grad or None where it does not apply, form is auto's pick)."""
        for form, weight_grad, auto in forms:
            label = form if weight_grad is None else f"{form}/{_SHORT[weight_grad]}"
            auto = auto and weight_grad in (None, auto_weight_grad)
            factory = functools.partial(make, form, weight_grad or "xla")
            cases.append((name, label, auto, factory, shape))

    def reflect(name, cin, cout, kernel, res, forms):
        auto = resolve_reflect_conv_form("auto", cout)
        forms = [(fm, None if fm == "taps" else wg, fm == auto) for fm, wg in forms]
        make = functools.partial(ReflectConv, cout, kernel)
        add(f"{name} {kernel}x{kernel} {cin}->{cout}", (res, res, cin), forms, make)

    def padded(name, cin, cout, kernel, stride, res, taps=False):
        auto = resolve_downsample_form("auto") if taps else "conv"
        forms = [("conv", wg, auto == "conv") for wg in ("xla", "matmul")]
        forms += [("taps", None, auto == "taps")] if taps else []  # its weight gradient: matmul

        def make(form, weight_grad):
            return PaddedConv(cout, kernel, stride, 1, weight_grad, form=form)

        name = f"{name} {kernel}x{kernel}/{stride} {cin}->{cout}"
        add(name, (res, res, cin), forms, make)

    both = [("valid", "xla"), ("valid", "matmul"), ("same_crop", "xla"), ("same_crop", "matmul")]
    reflect("G stem", 1, f, 7, size, both)
    padded("G down", f, 2 * f, 3, 2, size, taps=True)
    padded("G down", 2 * f, 4 * f, 3, 2, size // 2, taps=True)
    winograd = [("winograd", "xla"), ("winograd", "winograd")]  # the large CPU steps' forms
    reflect("G block", 4 * f, 4 * f, 3, size // 4, [*both, *winograd])
    for cin, res in ((4 * f, size // 4), (2 * f, size // 2)):
        auto = resolve_upsample_form("auto")
        forms = [("transpose", None, auto == "transpose")]
        forms += [("subpixel", wg, auto == "subpixel") for wg in ("xla", "matmul")]
        forms += [("taps", None, auto == "taps")]
        make = functools.partial(ConvTranspose2x, cin // 2)
        add(f"G up 3x3/2T {cin}->{cin // 2}", (res, res, cin), forms, make)
    reflect("G head", f, 1, 7, size, [*both, ("taps", None)])
    padded("D conv", 1, f, 4, 2, size)
    padded("D conv", f, 2 * f, 4, 2, size // 2)
    padded("D conv", 2 * f, 4 * f, 4, 2, size // 4)
    padded("D conv", 4 * f, 8 * f, 4, 1, size // 8)
    padded("D conv", 8 * f, 1, 4, 1, size // 8 - 1)
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--features", type=int, default=64, help="the generator's first width")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only",
        nargs="+",
        default=[""],
        help="time only the rows whose name contains one of these (e.g. 'block' 'generator')",
    )
    args = parser.parse_args(argv)

    print(f"backend: {jax.default_backend()}  devices: {jax.devices()}  batch {args.batch}")
    print("times in ms; * = the form 'auto' picks here; cpu = process CPU time (all threads)")
    header = ("size", "layer", "form", "fwd", "fwd+bwd", "cpu")
    print("{:>4s}  {:24s} {:15s}  {:>9s} {:>9s} {:>9s}".format(*header))
    rng = np.random.default_rng(0)
    for size in args.sizes:
        groups = {}  # layer -> (input shape, [(form, auto, factory)])
        for layer, form, auto, factory, shape in _layer_cases(size, args.features):
            if any(key in layer for key in args.only):
                groups.setdefault(layer, (shape, []))[1].append((form, auto, factory))
        for layer, (shape, forms) in groups.items():
            x = jnp.asarray(rng.standard_normal((args.batch, *shape), dtype=np.float32))
            times = _time_group([(factory(), {}) for _, _, factory in forms], x, args.repeats)
            for (form, auto, _), row in zip(forms, times, strict=True):
                _print_row(size, layer, form, auto, *row)

        x = jnp.asarray(rng.uniform(-1, 1, (args.batch, size, size, 1)).astype(np.float32))
        f = args.features
        train = {"train": True}
        generators = [
            ("plain", ResnetGenerator(features=f, **PLAIN_FORMS), train),
            ("auto, xla grads", ResnetGenerator(features=f, weight_grad="xla"), train),
            ("auto", ResnetGenerator(features=f), train),
        ]
        discriminators = [
            ("plain", PatchDiscriminator(f, weight_grad="xla"), {}),
            ("auto", PatchDiscriminator(f), {}),
        ]
        for name, models in (("generator", generators), ("discriminator", discriminators)):
            if not any(key in name for key in args.only):
                continue
            times = _time_group([(model, kwargs) for _, model, kwargs in models], x, args.repeats)
            for (form, _, _), row in zip(models, times, strict=True):
                _print_row(size, name, form, form == "auto", *row)


def _print_row(size: int, name: str, form: str, auto: bool, *seconds: float) -> None:
    fwd, both, both_cpu = (f"{t * 1e3:9.1f}" for t in seconds)
    print(
        f"{size:4d}  {name:24s} {form:15s}{'*' if auto else ' '} {fwd} {both} {both_cpu}",
        flush=True,
    )


if __name__ == "__main__":
    main()
