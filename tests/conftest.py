"""Test setup: four fake CPU devices, set before anything imports jax."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep worker processes and the test process from fighting over the two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from absl import flags  # noqa: E402

# grain reads absl flags inside its worker processes; outside absl.app.run they must be marked
# parsed first (grain 0.2.18 raises UnparsedFlagAccessError otherwise).
flags.FLAGS.mark_as_parsed()


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` when no accelerator is present."""
    import jax

    if jax.default_backend() != "cpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU or TPU backend")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
