"""Time a config's training step on synthetic arrays (no prepared data needed).

    python -m xrayjax.tools.benchmark --config configs/cyclegan_forearm.py [--image-size 256] \
        [--global-batch 1] [--steps 10] [--config.dtype=bfloat16] \
        [--config.model.upsample=transpose]
    python -m xrayjax.tools.benchmark --config configs/cyclegan_forearm.py --image-size 256 \
        --global-batches 1,8,32 --dtypes float32,bfloat16       # a table in one process

Prints one JSON line per (dtype, global batch): trace_s (tracing and lowering the step),
compile_s (XLA compiling it), step_s_median, images_per_s, flops_per_step (XLA's cost analysis
of the per-device compiled program), memory_bytes (XLA's memory analysis of that program, per
device: argument, output, alias and temp buffers), peak_rss_mb (the process's largest
resident set so far, compiling included), devices, device_kind, and mfu where the device's peak
is known. In a sweep, a size that fails (out of memory, say) prints its error and the sweep
goes on.
"""

from __future__ import annotations

import copy
import itertools
import json
import resource
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from xrayjax import logging as runlog
from xrayjax import parallel

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_integer("image_size", None, "override config.image_size")
flags.DEFINE_integer("global_batch", None, "override config.global_batch")
flags.DEFINE_integer("steps", 10, "timed steps after the compiling one")
flags.DEFINE_list("global_batches", None, "sweep these global batches (one JSON line each)")
flags.DEFINE_list("dtypes", None, "sweep these compute dtypes, e.g. float32,bfloat16")
flags.DEFINE_alias("image-size", "image_size")  # both spellings, as in the README
flags.DEFINE_alias("global-batch", "global_batch")
flags.DEFINE_alias("global-batches", "global_batches")
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


def memory_bytes(compiled: jax.stages.Compiled) -> dict[str, int]:
    """XLA's memory analysis of a compiled program (per device); {} where the backend has none."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    return {
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "alias": int(stats.alias_size_in_bytes),
        "temp": int(stats.temp_size_in_bytes),
    }


def peak_rss_mb() -> float:
    """The process's largest resident set so far, in MiB (ru_maxrss: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _gan_setup(config, mesh):
    from xrayjax import build

    engine = build.gan_engine(config, steps_per_epoch=1000, total_steps=100_000)
    shape = (config.image_size, config.image_size, 1)
    init = build.gan_init(engine, config)
    state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {
        name: {"image": rng.uniform(-1, 1, (config.global_batch, *shape)).astype(np.float32)}
        for name in config.domains
    }
    return engine.train_step, state, batch, build.large_cpu_train_step(engine)


def _classifier_setup(config, mesh):
    from xrayjax import build

    engine = build.classifier_engine(config, steps_per_epoch=1000)
    init = build.classifier_init(engine, config)
    state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    shape = (config.global_batch, config.image_size, config.image_size, 1)
    batch = {
        "image": rng.uniform(-1, 1, shape).astype(np.float32),
        "label": rng.integers(0, 2, config.global_batch).astype(np.int32),
    }
    return engine.train_step, state, batch, None


SETUPS = {"gan": _gan_setup, "classifier": _classifier_setup}


def benchmark(config, steps: int) -> dict:
    """Compile and time the training step; returns the figures."""
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.global_batch, mesh)
    step_fn, state, host_batch, large_step_fn = SETUPS[config.trainer](config, mesh)
    batch = parallel.global_batch_array(mesh, host_batch)
    start = time.perf_counter()
    # Python tracing, then the program handed to XLA, as the GAN trainer lowers and compiles it
    # (the classifier trainer compiles its step with XLA's defaults at every size).
    lowered, large = parallel.lower_step(step_fn, mesh, state, batch, large_step_fn)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = parallel.compile_lowered(lowered, large)
    compile_s = time.perf_counter() - start
    del lowered  # as parallel.compile_step, keep only the executable
    parallel.release_freed_memory()
    flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))  # None on some backends
    memory = memory_bytes(compiled)
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
        "trace_s": round(trace_s, 2),
        "compile_s": round(compile_s, 2),
        "step_s_median": round(median, 4),
        "images_per_s": round(config.global_batch / median, 2),
        "flops_per_step": flops,
        "memory_bytes": memory,
        "peak_rss_mb": peak_rss_mb(),
        "devices": devices,
        "device_kind": kind,
    }
    peak = peak_flops(kind, config.dtype)
    if peak and flops:
        # The compiled program is the per-device (partitioned) one, so its FLOPs are per device.
        result["mfu"] = round(flops / median / peak, 4)
    return result


def sweep(config, dtypes: list[str], batches: list[int], steps: int):
    """benchmark() for every (dtype, global batch), yielding each result or its error."""
    for dtype, batch in itertools.product(dtypes, batches):
        run = copy.deepcopy(config)
        with run.unlocked():
            run.dtype, run.global_batch = dtype, batch
        try:
            yield benchmark(run, steps)
        except Exception as err:  # one size failing (out of memory, say) must not lose the rest
            if len(dtypes) * len(batches) == 1:
                raise
            yield {"dtype": dtype, "global_batch": batch, "error": f"{type(err).__name__}: {err}"}


def main(argv) -> None:
    """absl main."""
    del argv
    config = FLAGS.config
    with config.unlocked():
        if FLAGS.image_size:
            config.image_size = FLAGS.image_size
        if FLAGS.global_batch:
            config.global_batch = FLAGS.global_batch
    from xrayjax.build import DTYPES  # the networks' import cost only once flags are fine

    dtypes = FLAGS.dtypes or [config.dtype]
    if unknown := [d for d in dtypes if d not in DTYPES]:
        raise app.UsageError(f"unknown dtype(s) {', '.join(unknown)}; allowed: {', '.join(DTYPES)}")
    try:
        batches = [int(b) for b in FLAGS.global_batches or [config.global_batch]]
    except ValueError:
        message = f"--global_batches takes integers, got {FLAGS.global_batches}"
        raise app.UsageError(message) from None
    # A rerun (after a timeout, say) loads the programs compiled so far instead of recompiling.
    parallel.enable_compilation_cache()
    for result in sweep(config, dtypes, batches, FLAGS.steps):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=runlog.parse_flags)
