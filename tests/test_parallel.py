"""The compiled training step's memory: XLA's CPU scheduling, and memory freed after compiling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
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


def test_large_cpu_steps_compile_for_least_memory_with_identical_results(monkeypatch):
    mesh = parallel.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    state = {
        "kernels": [jnp.asarray(rng.normal(0, 0.1, (3, 3, 8, 8)), jnp.float32) for _ in range(3)]
    }
    batch = jnp.asarray(rng.normal(size=(4, 32, 32, 8)), jnp.float32)
    lowered = parallel.jit_step(_conv_net_step, mesh, state).lower(state, batch)
    default = lowered.compile()  # XLA's own (concurrency-first) schedule
    temp = default.memory_analysis().temp_size_in_bytes
    traffic = lowered.cost_analysis()["bytes accessed"]
    monkeypatch.setattr(parallel, "MEMORY_SCHEDULE_MIN_BYTES_ACCESSED", traffic + 1)
    small = parallel.compile_lowered(lowered, mesh)
    monkeypatch.setattr(parallel, "MEMORY_SCHEDULE_MIN_BYTES_ACCESSED", traffic - 1)
    large = parallel.compile_lowered(lowered, mesh)
    assert small.memory_analysis().temp_size_in_bytes == temp  # below the threshold: unchanged
    assert large.memory_analysis().temp_size_in_bytes < 0.9 * temp
    copy = jax.tree.map(jnp.copy, state)
    for _ in range(3):  # the schedule orders the same operations: every bit agrees
        state, metrics = large(state, batch)
        copy, copy_metrics = default(copy, batch)
    assert float(metrics["loss"]) == float(copy_metrics["loss"])
    for ours, reference in zip(jax.tree.leaves(state), jax.tree.leaves(copy), strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))


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
