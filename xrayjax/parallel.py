"""Data parallelism over every device of every process: one 'data' mesh axis.

Parameters and optimizer state are replicated; batches are sharded along their first axis. The
compiler inserts the gradient all-reduce (the modern form of pmap). Multi-process runs start
with `initialize_distributed()`, before anything touches a device.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_prep import errors

DATA_AXIS = "data"

# XLA's CPU compiler schedules a program's independent operations for concurrency, which keeps
# their buffers alive together. Its memory-minimising schedule cut the full-size CycleGAN step's
# temporaries from 5.4 to 2.0 GiB at the same step time, but slowed a small step (64 px, batch
# 4, 8 features: 0.086 against 0.098 s, the best of 60 steps), whose operations are too small to
# keep both cores busy one at a time. What decides both is the step's memory traffic per device,
# which XLA estimates before compiling: the demo's CycleGAN and multi-cycleGAN steps 1.6 and
# 4.7 GB, the study preset's 5.4 and 16.2 GB (these keep XLA's default); the 128-px step with 32
# features and batch 4 47 GB, the full-size one 162 GB (docs/performance.md, "Memory").
MEMORY_SCHEDULE_MIN_BYTES_ACCESSED = 32e9
CPU_COMPILER_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}

# XLA's CPU compiler hands convolutions and reductions to YNNPACK by default. In jaxlib 0.10.2
# its convolutions ran the 128-px step's residual conv (4×32×32×128, 3×3) slower than XLA's own:
# forward 10.2 against 6.9 ms, value and both gradients 50.5 against 31.0 ms; the large steps
# took 5-8 % longer (docs/performance.md, "YNNPACK's convolutions"). In jaxlib 0.12 the 128-px
# step in the "auto" forms was the faster with them, but in the large steps' own forms
# (build.LARGE_CPU_STEP_FORMS) it is the slower there too: jaxlib 0.12.1, median 2.82 against
# 3.60 s, the full-size step 9.60 against 17.00 s (docs/performance.md, "Large steps under
# jaxlib 0.12.1"). Its reductions are the faster: with YNNPACK off altogether the 128-px step
# took 5.1 s against 3.9 (jaxlib 0.10.2). So large steps keep YNNPACK for reductions only.
YNN_REDUCTIONS_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join a multi-process run when one is configured; a single process does nothing.

    With no arguments, jax auto-detects SLURM and TPU VMs. Explicit values (or the variables
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) serve other launchers and tests.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    auto = any(
        v in os.environ
        for v in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")
    )
    if coordinator is None and not auto:
        return
    if (
        coordinator is None
        and "SLURM_JOB_ID" in os.environ
        and int(os.environ.get("SLURM_NTASKS", "1")) == 1
    ):
        return  # one task: nothing to coordinate
    jax.distributed.initialize(coordinator, num_processes, process_id)
    if jax.default_backend() == "cpu":
        # jaxlib 0.12.1's CPU programs read back from the persistent cache never finish their
        # cross-process collectives (gloo): a resumed two-process run hung at its first step.
        # Compiling afresh costs no time: process 1 compiled every program anyway (its cache
        # keys differ from process 0's) and the compile barrier makes process 0 wait for it
        # (docs/performance.md, "Multi-process CPU runs compile afresh").
        jax.config.update("jax_enable_compilation_cache", False)


def enable_compilation_cache() -> None:
    """Cache compiled programs on disk, so resumes and later runs skip compiling."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        cache = os.path.expanduser("~/.cache/xrayjax/jax-compilation")
        jax.config.update("jax_compilation_cache_dir", cache)


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over the given devices (default: all of all processes), ordered by process."""
    devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
    kwargs = {}
    if hasattr(jax.sharding, "AxisType"):
        # jax ≥ 0.12 defaults to Explicit axes, under which some gradients (e.g. optax's integer
        # cross-entropy) fail; plain data parallelism wants Auto.
        kwargs["axis_types"] = (jax.sharding.AxisType.Auto,)
    return Mesh(np.asarray(devices), (DATA_AXIS,), **kwargs)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding for parameters, optimizer state and scalars: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding for batches: split along the first axis over every device."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch(global_batch: int, mesh: Mesh) -> None:
    """Fail early, with the fix, when the global batch does not divide over the devices."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise errors.InputError(
            f"global batch {global_batch} does not divide by the {devices} devices "
            f"({jax.process_count()} process(es)); set config.global_batch to a multiple of "
            f"{devices}"
        )


def jit_step(step_fn, mesh: Mesh, state):
    """Compile `step_fn(state, batch) → (state, metrics)` for data parallelism on `mesh`.

    The state is replicated and donated (updated in place); the batch is sharded on its first
    axis; metrics come back replicated. A method of an engine equal to an earlier one's (same
    networks, optimizers, settings) gets that one's jitted step: runs in one process, such as an
    ablation's seeds, trace and compile it once.
    """
    owner, treedef = getattr(step_fn, "__self__", None), jax.tree.structure(state)
    try:
        hash(owner)
    except TypeError:  # an engine that cannot be compared by value: nothing to share
        owner = None
    if owner is None:
        return _jit_step(step_fn, mesh, treedef)
    return _jit_method(owner, step_fn.__func__, mesh, treedef)


@functools.lru_cache(maxsize=8)
def _jit_method(owner, func, mesh: Mesh, treedef):
    return _jit_step(func.__get__(owner), mesh, treedef)


def _jit_step(step_fn, mesh: Mesh, treedef):
    state_sharding = jax.tree.unflatten(treedef, [replicated(mesh)] * treedef.num_leaves)
    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharding(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )


def lower_step(
    step_fn: Callable,
    mesh: Mesh,
    state,
    example_batch,
    large_step_fn: Callable[[float], Callable] | None = None,
) -> tuple[jax.stages.Lowered, bool]:
    """`jit_step` lowered for the batch's shapes, and whether it is a large CPU step.

    `large_step_fn`, when given, maps a large CPU step's memory traffic per device (bytes, as
    XLA estimates it for `step_fn`'s program) to the same step in the forms that suit it; a
    step judged large is lowered in those forms instead.
    """
    lowered = jit_step(step_fn, mesh, state).lower(state, example_batch)
    traffic = cpu_traffic_per_device(lowered, mesh)
    large = is_large_cpu_step(traffic)
    if large and large_step_fn is not None:
        large_fn = large_step_fn(traffic)
        if large_fn != step_fn:
            del lowered  # not alive beside the next one
            lowered = jit_step(large_fn, mesh, state).lower(state, example_batch)
    return lowered, large


def compile_lowered(lowered: jax.stages.Lowered, large: bool) -> jax.stages.Compiled:
    """Compile a lowered step; a large CPU step (`lower_step` says which) with its options.

    Call `release_freed_memory()` once the lowered program is dropped too.
    """
    return lowered.compile(large_cpu_step_options() if large else None)


def cpu_traffic_per_device(lowered: jax.stages.Lowered, mesh: Mesh) -> float:
    """XLA's estimate of a lowered step's memory traffic per device in bytes; 0 off CPU."""
    if mesh.devices.flat[0].platform != "cpu":
        return 0.0
    return lowered.cost_analysis()["bytes accessed"] / mesh.devices.size


def is_large_cpu_step(traffic_per_device: float) -> bool:
    """Whether a step with this `cpu_traffic_per_device` takes the large-step options."""
    return traffic_per_device > MEMORY_SCHEDULE_MIN_BYTES_ACCESSED


def large_cpu_step_options() -> dict[str, str]:
    """XLA options for a CPU step above the traffic threshold (see the comments above)."""
    return CPU_COMPILER_OPTIONS | YNN_REDUCTIONS_ONLY


def release_freed_memory() -> None:
    """Return memory the process has freed to the OS (glibc's malloc_trim); elsewhere nothing.

    Compiling a step frees hundreds of MiB that glibc keeps resident for reuse, but the step's
    large buffers are mapped afresh beside it, so the two added up in the process's peak: the
    128-px CycleGAN step's peak falls from 2.20 to 1.66 GiB when this runs after compiling it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only (musl has none)
    except AttributeError:
        return
    trim(0)


def compile_step(
    step_fn: Callable,
    mesh: Mesh,
    state,
    example_batch,
    large_step_fn: Callable[[float], Callable] | None = None,
) -> jax.stages.Compiled:
    """`lower_step`, compiled ahead of time, then a barrier.

    Processes finish compiling at different times; the first collective of a step gives its
    peers only ~30 s (gloo's context deadline on CPU), so every process waits here until all
    have compiled.
    """
    lowered, large = lower_step(step_fn, mesh, state, example_batch, large_step_fn)
    compiled = compile_lowered(lowered, large)
    del lowered
    release_freed_memory()  # what compiling freed, the lowered program included
    barrier("xrayjax_step_compiled")
    return compiled


_barrier_count = 0


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Wait until every process arrives (through the coordinator; no device collective)."""
    global _barrier_count
    if jax.process_count() == 1:
        return
    import orbax.checkpoint as ocp

    _barrier_count += 1  # barrier names must be unique per use
    ocp.multihost.sync_global_processes(f"{name}_{_barrier_count}", timeout=timeout_s)


def global_batch_array(mesh: Mesh, local_batch):
    """Assemble each process's rows (a pytree of numpy arrays) into global sharded arrays."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def replicate(mesh: Mesh, tree):
    """Place a host pytree (same on every process) on every device."""
    return jax.device_put(tree, replicated(mesh))


def fetch(tree):
    """Bring (replicated or fully addressable) arrays to host numpy, on every process."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
