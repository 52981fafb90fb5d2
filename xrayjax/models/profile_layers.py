"""Time every form of the CycleGAN layers, and the whole models, forward and forward+backward.

    python -m xrayjax.models.profile_layers [--sizes 128 256] [--batch 1] [--repeats 5]

Each row is one layer of the generator (or a whole model) at its place in a network fed a
SIZE×SIZE×1 image, with the default 64 features. fwd+bwd is the value and gradient of a scalar loss
with respect to the parameters and the input, as in a GAN step. Times are the minimum over repeats,
after one compiling call, in milliseconds; "auto" says which form `form="auto"` picks on this
backend. Use this to re-check the defaults in layers.py on a new machine or backend.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xrayjax.models.discriminator import PatchDiscriminator
from xrayjax.models.generator import ResnetGenerator
from xrayjax.models.layers import (
    ConvTranspose2x,
    ReflectConv,
    normal_init,
    resolve_reflect_conv_form,
    resolve_upsample_form,
)


def _best_seconds(fn: Callable, args: tuple, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def _time_module(module: nn.Module, x: jax.Array, repeats: int, **kwargs) -> tuple[float, float]:
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    params = module.init(rngs, x, **kwargs)["params"]

    def loss(params, x):
        y = module.apply({"params": params}, x, rngs=rngs, **kwargs)
        return jnp.mean(jnp.square(y.astype(jnp.float32)))

    forward = jax.jit(lambda p, x: module.apply({"params": p}, x, rngs=rngs, **kwargs))
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return (
        _best_seconds(forward, (params, x), repeats),
        _best_seconds(value_and_grad, (params, x), repeats),
    )


def _layer_cases(size: int, f: int = 64) -> list[tuple[str, str, bool, Callable, tuple]]:
    """(layer, form, picked by "auto", module factory, input shape without batch) per layer form."""
    s = size
    strided = dict(strides=2, padding=((1, 1), (1, 1)), kernel_init=normal_init)
    cases = []

    def reflect(name, cin, cout, kernel, res, forms):
        for form in forms:
            auto = resolve_reflect_conv_form("auto", cout) == form
            factory = lambda fm=form: ReflectConv(cout, kernel, fm)  # noqa: E731
            cases.append(
                (f"{name} {kernel}x{kernel} {cin}->{cout}", form, auto, factory, (res, res, cin))
            )

    reflect("stem", 1, f, 7, s, ("valid", "same_crop"))
    for cin, res in ((f, s), (2 * f, s // 2)):
        factory = lambda c=2 * cin: nn.Conv(c, (3, 3), **strided)  # noqa: E731
        cases.append((f"down 3x3/2 {cin}->{2 * cin}", "conv", True, factory, (res, res, cin)))
    reflect("block", 4 * f, 4 * f, 3, s // 4, ("valid", "same_crop"))
    for cin, res in ((4 * f, s // 4), (2 * f, s // 2)):
        for form in ("transpose", "subpixel"):
            auto = resolve_upsample_form("auto") == form
            factory = lambda fm=form, c=cin // 2: ConvTranspose2x(c, fm)  # noqa: E731
            cases.append((f"up 3x3/2T {cin}->{cin // 2}", form, auto, factory, (res, res, cin)))
    reflect("head", f, 1, 7, s, ("valid", "same_crop", "taps"))
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-layers", action="store_true", help="time the whole models only")
    args = parser.parse_args(argv)

    print(f"backend: {jax.default_backend()}  devices: {jax.devices()}  batch {args.batch}")
    rng = np.random.default_rng(0)
    print(f"{'size':>4s}  {'layer':24s} {'form':10s}   {'fwd':>12s}  {'fwd+bwd':>16s}   (* = auto)")
    rows = []  # (size, name, form, auto, fwd, fwd+bwd)
    for size in args.sizes:
        cases = [] if args.skip_layers else _layer_cases(size)
        for layer, form, auto, factory, shape in cases:
            x = jnp.asarray(rng.standard_normal((args.batch, *shape), dtype=np.float32))
            fwd, both = _time_module(factory(), x, args.repeats)
            rows.append((size, layer, form, auto, fwd, both))
            _print_row(rows[-1])
        x = jnp.asarray(rng.uniform(-1, 1, (args.batch, size, size, 1)).astype(np.float32))
        models = [
            ("generator", "plain", ResnetGenerator(reflect_conv="valid", upsample="transpose")),
            ("generator", "auto", ResnetGenerator()),
            ("discriminator", "conv", PatchDiscriminator()),
        ]
        for name, form, model in models:
            kwargs = {"train": True} if isinstance(model, ResnetGenerator) else {}
            fwd, both = _time_module(model, x, args.repeats, **kwargs)
            rows.append((size, name, form, form != "plain", fwd, both))
            _print_row(rows[-1])


def _print_row(row: tuple) -> None:
    size, name, form, auto, fwd, both = row
    mark = "*" if auto else " "
    print(
        f"{size:4d}  {name:24s} {form:10s}{mark}  fwd {fwd * 1e3:9.1f} ms"
        f"  fwd+bwd {both * 1e3:9.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
