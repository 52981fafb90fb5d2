"""The compiled training step's memory (XLA's CPU scheduling, memory freed after compiling), and
multi-process CPU runs' compiled programs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import main_process
import numpy as np
import pytest
from jax import lax

from xrayjax import parallel

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_net_step(state, batch):
    """A step shaped like the GAN's: one small conv net applied to independent inputs."""

    def net(kernels, x):
        for k in kernels:
            x = jnp.tanh(lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_DIMS))
        return x

    def loss(kernels):
        return sum(jnp.mean(net(kernels, batch[i : i + 1] * (i + 1)) ** 2) for i in range(4))

    value, grads = jax.value_and_grad(loss)(state["kernels"])
    kernels = [k - 1e-2 * g for k, g in zip(state["kernels"], grads, strict=True)]
    return {"kernels": kernels}, {"loss": value}


def _lowered_conv_net(seed: int, layers: int, channels: int, size: int):
    """The conv net's step on one device, lowered, with its random state and batch."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(seed)
    shape = (3, 3, channels, channels)
    state = {
        "kernels": [jnp.asarray(rng.normal(0, 0.1, shape), jnp.float32) for _ in range(layers)]
    }
    batch = jnp.asarray(rng.normal(size=(4, size, size, channels)), jnp.float32)
    return mesh, state, batch, parallel.jit_step(_conv_net_step, mesh, state).lower(state, batch)


def test_large_cpu_steps_compile_for_least_memory_with_identical_results(monkeypatch):
    mesh, state, batch, lowered = _lowered_conv_net(seed=0, layers=3, channels=8, size=32)
    temp = lowered.compile().memory_analysis().temp_size_in_bytes  # XLA's defaults
    # The reference takes every option of a large step but the schedule (concurrency-first).
    options = parallel.large_cpu_step_options()
    unscheduled = {k: v for k, v in options.items() if k not in parallel.CPU_COMPILER_OPTIONS}
    default = lowered.compile(unscheduled or None)
    traffic = lowered.cost_analysis()["bytes accessed"]
    monkeypatch.setattr(parallel, "MEMORY_SCHEDULE_MIN_BYTES_ACCESSED", traffic + 1)
    small = parallel.compile_lowered(lowered, parallel.is_large_cpu_step(traffic))
    monkeypatch.setattr(parallel, "MEMORY_SCHEDULE_MIN_BYTES_ACCESSED", traffic - 1)
    large = parallel.compile_lowered(lowered, parallel.is_large_cpu_step(traffic))
    assert small.memory_analysis().temp_size_in_bytes == temp  # below the threshold: unchanged
    assert (
        large.memory_analysis().temp_size_in_bytes
        < 0.9 * default.memory_analysis().temp_size_in_bytes
    )
    copy = jax.tree.map(jnp.copy, state)
    for _ in range(3):  # the schedule orders the same operations: every bit agrees
        state, metrics = large(state, batch)
        copy, copy_metrics = default(copy, batch)
    assert float(metrics["loss"]) == float(copy_metrics["loss"])
    for ours, reference in zip(jax.tree.leaves(state), jax.tree.leaves(copy), strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))


def _slower_step(state, batch):
    """`_conv_net_step` with another rate: a stand-in for the same step in other forms."""
    new, metrics = _conv_net_step(state, batch)
    kernels = [2 * k - o for k, o in zip(new["kernels"], state["kernels"], strict=True)]
    return {"kernels": kernels}, metrics


def test_a_large_step_is_lowered_in_the_forms_given_for_large_steps(monkeypatch):
    mesh, state, batch, lowered = _lowered_conv_net(seed=2, layers=1, channels=8, size=8)
    traffic = lowered.cost_analysis()["bytes accessed"]
    results, asked = {}, []

    def large_step_fn(traffic_per_device):  # the forms may depend on the step's traffic
        asked.append(traffic_per_device)
        return _slower_step

    for name, threshold in (("small", traffic + 1), ("large", traffic - 1)):
        monkeypatch.setattr(parallel, "MEMORY_SCHEDULE_MIN_BYTES_ACCESSED", threshold)
        program, large = parallel.lower_step(_conv_net_step, mesh, state, batch, large_step_fn)
        assert large == (name == "large")
        assert asked == ([traffic / mesh.devices.size] if large else [])
        compiled = parallel.compile_step(_conv_net_step, mesh, state, batch, large_step_fn)
        asked.clear()
        assert compiled.as_text() == parallel.compile_lowered(program, large).as_text()
        results[name] = compiled(jax.tree.map(jnp.copy, state), batch)[0]["kernels"][0]
    plain = parallel.jit_step(_conv_net_step, mesh, state)(jax.tree.map(jnp.copy, state), batch)
    slower = parallel.jit_step(_slower_step, mesh, state)(jax.tree.map(jnp.copy, state), batch)
    np.testing.assert_array_equal(results["small"], plain[0]["kernels"][0])
    np.testing.assert_array_equal(results["large"], slower[0]["kernels"][0])
    assert not np.array_equal(results["small"], results["large"])


def _library_convolutions(compiled: jax.stages.Compiled) -> int:
    """How many convolutions of a compiled CPU program run inside YNNPACK fusions."""
    blocks = compiled.as_text().split("\n\n")
    called = {
        name
        for block in blocks
        for line in block.splitlines()
        if "__ynn_fusion" in line
        for name in re.findall(r"calls=(%[\w.\-]+)", line)
    }
    return sum(
        block.count(" convolution(")
        for block in blocks
        if block.split(" ", 1)[0].removeprefix("ENTRY ") in called
    )


def test_large_cpu_steps_leave_convolutions_to_xla():
    # 32 channels: narrow convs never go to YNNPACK, so they could not show the choice.
    _, state, batch, lowered = _lowered_conv_net(seed=1, layers=2, channels=32, size=8)
    options = parallel.large_cpu_step_options()
    library = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
    assert _library_convolutions(lowered.compile(library)) > 0  # the count sees them when asked
    assert options["xla_cpu_experimental_ynn_fusion_type"] == "LIBRARY_FUSION_TYPE_REDUCE"
    large, plain = lowered.compile(options), lowered.compile(library)
    assert _library_convolutions(large) == 0
    copy = jax.tree.map(jnp.copy, state)
    for _ in range(2):  # other kernels, the same step within float32 rounding
        state, metrics = large(state, batch)
        copy, copy_metrics = plain(copy, batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(copy_metrics["loss"]), rtol=1e-5)
    for ours, reference in zip(jax.tree.leaves(state), jax.tree.leaves(copy), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-4, atol=1e-6)


_FRAGMENT_AND_RELEASE = """
import json
from xrayjax import parallel


def resident_mib():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmRSS:")).split()[1]) / 1024


# 256 MiB in 64-KiB blocks, each followed by a small block that stays: freeing the large ones
# leaves holes that malloc keeps resident (none of them is at the top of the heap).
large, kept = [], []
for _ in range(4096):
    large.append(bytearray(b"x" * 65536))
    kept.append(bytearray(b"y" * 2048))
del large
before = resident_mib()
parallel.release_freed_memory()
print(json.dumps({"before": before, "after": resident_mib()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; glibc's malloc_trim")
def test_release_freed_memory_hands_freed_heap_back():
    # in a process of its own: no other thread allocates meanwhile
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENT_AND_RELEASE],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    resident = json.loads(out.stdout.strip().splitlines()[-1])
    assert resident["before"] - resident["after"] > 128, resident


# Each process contributes two rows to a global batch of four and all get the doubled sum back.
# `(2 * x).sum()`: under jaxlib 0.12.1 this form hung when read back from the cache, while
# `2 * x.sum()` did not.
_CROSS_PROCESS_SUM = """
import jax
import numpy as np

from xrayjax import parallel

parallel.initialize_distributed()
mesh = parallel.make_mesh()
rows = np.arange(2, dtype=np.float32) + 10 * jax.process_index()
batch = parallel.global_batch_array(mesh, rows)
print(float(jax.jit(lambda x: (2 * x).sum(), out_shardings=parallel.replicated(mesh))(batch)))
"""


def test_a_second_two_process_cpu_run_finishes_with_the_persistent_cache_of_the_first(
    tmp_path, monkeypatch
):
    """The hang of a resumed run on jaxlib 0.12.1: a cross-process program read back from the
    cache the run before wrote never finished its all-reduce."""
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "cache"))
    for _ in range(2):
        processes = main_process.two_processes([sys.executable, "-c", _CROSS_PROCESS_SUM])
        outputs = main_process.finish(processes, timeout_s=120)
        assert [float(out.split()[-1]) for out, _ in outputs] == [44.0, 44.0]
