"""Test setup: four fake CPU devices, set before anything imports jax."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs are cached on disk, so the many short training runs (and the processes
# the tests start) compile each program once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "xrayjax-test-jax-cache")
)
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


@pytest.fixture(scope="session")
def phantom_data_dir(tmp_path_factory):
    """Tiny 64×64 phantom datasets with the names the data=phantom configs read."""
    from data_prep import phantom

    data_dir = tmp_path_factory.mktemp("phantom_tfds")
    for spec in (
        phantom.PhantomSpec("forearm", "radiograph", num=24, num_test=12, seed=1),
        phantom.PhantomSpec("forearm", "clean", num=24, num_test=8, seed=2),
        phantom.PhantomSpec("wrist", "radiograph", num=12, num_test=8, seed=3),
        phantom.PhantomSpec("wrist", "clean", num=12, num_test=8, seed=4),
    ):
        phantom.build(spec, data_dir, size=64, overwrite=False)
    return data_dir
