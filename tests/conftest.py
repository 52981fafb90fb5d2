"""Test setup: four fake CPU devices, set before anything imports jax."""

import importlib
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


def _reference_run(config: str, overrides: tuple, data_dir, workdir):
    import main_process

    result = main_process.run(config, workdir, data_dir, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


@pytest.fixture(scope="session")
def gan_reference(phantom_data_dir, tmp_path_factory):
    """The runlocal CycleGAN trained to the end, uninterrupted, in one process × 4 devices."""
    from main_process import GAN, GAN_OVERRIDES

    return _reference_run(GAN, GAN_OVERRIDES, phantom_data_dir, tmp_path_factory.mktemp("gan"))


@pytest.fixture(scope="session")
def classifier_reference(phantom_data_dir, tmp_path_factory):
    """The runlocal classifier trained to the end, uninterrupted: (workdir, result, eval.json)."""
    from main_process import CLASSIFIER, CLASSIFIER_OVERRIDES

    workdir, result = _reference_run(
        CLASSIFIER, CLASSIFIER_OVERRIDES, phantom_data_dir, tmp_path_factory.mktemp("classifier")
    )
    return workdir, result, (workdir / "eval.json").read_text()


@pytest.fixture(scope="session")
def tiny_gan(phantom_data_dir, tmp_path_factory):
    """tiny_gan(config name) → (config, workdir, final state): the runlocal variant with one
    residual block trained 2 steps, once per session and name (tests only read its workdir)."""
    trained = {}

    def train(name: str):
        if name not in trained:
            from xrayjax.trainers import gan

            config = importlib.import_module(f"configs.{name}").get_config("data=phantom,runlocal")
            config.data_dir = str(phantom_data_dir)
            config.total_steps = 2
            config.log_every = 1
            config.model.num_blocks = 1  # compiles faster; the block count has its own tests
            workdir = tmp_path_factory.mktemp(name)
            trained[name] = config, workdir, gan.train(config, workdir)
        return trained[name]

    return train
