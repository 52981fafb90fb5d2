"""Time a config's training step on synthetic arrays (no prepared data needed).

    python -m xrayjax.benchmark --config configs/cyclegan_forearm.py [--image-size 256] \
        [--global-batch 1] [--steps 10] [--config.dtype=bfloat16] \
        [--config.model.upsample=transpose]

Prints one JSON line: compile_s, step_s_median, images_per_s, flops_per_step (XLA's cost
analysis of the per-device compiled program), devices, device_kind, and mfu where the
device's peak is known.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from xrayjax import parallel

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_integer("image_size", None, "override config.image_size")
flags.DEFINE_integer("global_batch", None, "override config.global_batch")
flags.DEFINE_integer("steps", 10, "timed steps after the compiling one")
flags.DEFINE_alias("image-size", "image_size")  # both spellings, as in the README
flags.DEFINE_alias("global-batch", "global_batch")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS

# Dense peak FLOP/s per device, for MFU (vendor datasheets: H100/H200 SXM, TPU v4/v5e/v5p/v6e).
PEAK_FLOPS = {
    "bfloat16": {
        "H100": 989e12,
        "H200": 989e12,
        "TPU v4": 275e12,
        "TPU v5 lite": 197e12,
        "TPU v5": 459e12,
        "TPU v6 lite": 918e12,
    },
    "float32": {"H100": 67e12, "H200": 67e12},  # no TF32: XLA's default f32 matmul precision
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """The device's dense peak for the dtype, when known."""
    for name, peak in PEAK_FLOPS.get(dtype, {}).items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def _gan_setup(config, mesh):
    from xrayjax.trainers import gan

    engine = gan.build_engine(config, steps_per_epoch=1000, total_steps=100_000)
    shape = (config.image_size, config.image_size, 1)
    init = gan.init_fn(engine, config)
    state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {
        name: {"image": rng.uniform(-1, 1, (config.global_batch, *shape)).astype(np.float32)}
        for name in config.domains
    }
    return engine.train_step, state, batch


def _classifier_setup(config, mesh):
    from xrayjax.trainers import classifier

    engine = classifier.build_engine(config, steps_per_epoch=1000)
    init = classifier.init_fn(engine, config)
    state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    shape = (config.global_batch, config.image_size, config.image_size, 1)
    batch = {
        "image": rng.uniform(-1, 1, shape).astype(np.float32),
        "label": rng.integers(0, 2, config.global_batch).astype(np.int32),
    }
    return engine.train_step, state, batch


SETUPS = {"gan": _gan_setup, "classifier": _classifier_setup}


def benchmark(config, steps: int) -> dict:
    """Compile and time the training step; returns the figures."""
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.global_batch, mesh)
    step_fn, state, host_batch = SETUPS[config.trainer](config, mesh)
    batch = parallel.global_batch_array(mesh, host_batch)
    jitted = parallel.jit_step(step_fn, mesh, state)
    start = time.perf_counter()
    compiled = jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    devices = jax.device_count()
    kind = jax.devices()[0].device_kind
    result = {
        "config_trainer": config.trainer,
        "image_size": config.image_size,
        "global_batch": config.global_batch,
        "dtype": config.dtype,
        "compile_s": round(compile_s, 2),
        "step_s_median": round(median, 4),
        "images_per_s": round(config.global_batch / median, 2),
        "flops_per_step": flops,
        "devices": devices,
        "device_kind": kind,
    }
    peak = peak_flops(kind, config.dtype)
    if peak and flops:
        # The compiled program is the per-device (partitioned) one, so its FLOPs are per device.
        result["mfu"] = round(flops / median / peak, 4)
    return result


def main(argv) -> None:
    """absl main."""
    del argv
    config = FLAGS.config
    with config.unlocked():
        if FLAGS.image_size:
            config.image_size = FLAGS.image_size
        if FLAGS.global_batch:
            config.global_batch = FLAGS.global_batch
    print(json.dumps(benchmark(config, FLAGS.steps)), flush=True)


if __name__ == "__main__":
    app.run(main)
