"""Test setup: four fake CPU devices, set before anything imports jax."""

import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable

# LLVM at -O1 rather than XLA's default -O3: the tests' programs are small and run a few steps,
# and compiling them is most of the suite's time (docs/performance.md). Child processes inherit it.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4 --xla_backend_optimization_level=1"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs are cached on disk, so the many short training runs (and the processes
# the tests start) compile each program once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "xrayjax-test-jax-cache")
)
# Every program goes to the cache, not only those that take a second or more to compile: the
# tests' processes compile the same few hundred small ones (about 90 s of compiling in all).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Keep worker processes and the test process from fighting over the two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from absl import flags  # noqa: E402

# grain reads absl flags inside its worker processes; outside absl.app.run they must be marked
# parsed first (grain 0.2.18 raises UnparsedFlagAccessError otherwise).
flags.FLAGS.mark_as_parsed()


# The files that take a minute or more (`make test`'s --durations), longest first. `make test`
# hands whole files to its processes in collection order (--no-loadscope-reorder; pytest-xdist
# would otherwise order them by their number of tests), so a long file no longer starts last
# while the other process has run out of work. The first two start by building different shared
# runs (the reference classifier; the reference CycleGAN and the tiny multi-cycleGANs) rather than
# one process waiting on the other's lock.
LONG_FILES = (
    "tests/test_multihost.py",
    "tests/trainers/test_configs.py",
    "tests/trainers/test_gan_trainer.py",
    "tests/test_evaluate.py",
    "tests/steps/test_gan_engine.py",
    "tests/trainers/test_classifier_trainer.py",
    "tests/tools/test_ablation.py",
    "tests/test_cloud_storage.py",
    "tests/models/test_gan_models.py",
)


def pytest_collection_modifyitems(config, items):
    """Long files first; skip tests marked `gpu` when no accelerator is present."""
    import jax

    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
    if jax.default_backend() != "cpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU or TPU backend")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def shared_dir(
    tmp_path_factory, name: str, build: Callable[[pathlib.Path], object]
) -> pathlib.Path:
    """A folder `build` fills once per session, shared by every pytest-xdist worker."""
    # The first worker to ask takes a file lock and builds; the others wait, then reuse it.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / name, root / f"{name}.complete"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def phantom_data_dir(tmp_path_factory):
    """Tiny 64×64 phantom datasets with the names the data=phantom configs read."""
    from data_prep import phantom

    def build(data_dir):
        for spec in (
            phantom.PhantomSpec("forearm", "radiograph", num=24, num_test=12, seed=1),
            phantom.PhantomSpec("forearm", "clean", num=24, num_test=8, seed=2),
            phantom.PhantomSpec("wrist", "radiograph", num=12, num_test=8, seed=3),
            phantom.PhantomSpec("wrist", "clean", num=12, num_test=8, seed=4),
        ):
            phantom.build(spec, data_dir, size=64, overwrite=False)

    return shared_dir(tmp_path_factory, "phantom_tfds", build)


def _reference_run(name: str, config: str, overrides: tuple, data_dir, tmp_path_factory):
    """Run `config` to the end once per session; (workdir, its CompletedProcess)."""
    import main_process

    def build(folder):
        result = main_process.run(config, folder / "run", data_dir, *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
        (folder / "result.json").write_text(
            json.dumps({"returncode": 0, "stdout": result.stdout, "stderr": result.stderr})
        )
        # Tests rewrite eval.json in the shared run; keep the one the run itself wrote.
        if (folder / "run" / "eval.json").exists():
            shutil.copy(folder / "run" / "eval.json", folder / "eval_at_end.json")

    folder = shared_dir(tmp_path_factory, name, build)
    result = json.loads((folder / "result.json").read_text())
    return folder / "run", subprocess.CompletedProcess(config, **result)


@pytest.fixture(scope="session")
def gan_reference(phantom_data_dir, tmp_path_factory):
    """The runlocal CycleGAN trained to the end, uninterrupted, in one process × 4 devices."""
    from main_process import GAN, GAN_OVERRIDES

    return _reference_run("gan", GAN, GAN_OVERRIDES, phantom_data_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def classifier_reference(phantom_data_dir, tmp_path_factory):
    """The runlocal classifier trained to the end, uninterrupted: (workdir, result, eval.json)."""
    from main_process import CLASSIFIER, CLASSIFIER_OVERRIDES

    workdir, result = _reference_run(
        "classifier", CLASSIFIER, CLASSIFIER_OVERRIDES, phantom_data_dir, tmp_path_factory
    )
    return workdir, result, (workdir.parent / "eval_at_end.json").read_text()


@pytest.fixture(scope="session")
def tiny_gan(phantom_data_dir, tmp_path_factory, request):
    """tiny_gan(config name) → (config, workdir, final state as saved): the runlocal variant with
    one residual block, once per session and name (tests only read its workdir). The CycleGAN's
    is the reference run (12 steps); the multi-cycleGANs train 2 steps."""

    def train(name: str):
        import main_process

        from xrayjax.tools import demo
        from xrayjax.trainers import gan

        if name == "cyclegan_forearm":
            config = main_process.gan_config(phantom_data_dir)
            workdir, _ = request.getfixturevalue("gan_reference")
        else:
            # One block compiles faster; the block count has its own tests.
            fields = {
                "total_steps": 2,
                "log_every": 1,
                "model.num_blocks": 1,
                **main_process.PLAIN_FORMS,
            }
            config = demo.configure(
                name, "data=phantom,runlocal", {**fields, "data_dir": str(phantom_data_dir)}
            )
            workdir = shared_dir(tmp_path_factory, f"tiny_{name}", lambda d: gan.train(config, d))
        return config, workdir, main_process.checkpoint_state(workdir, config.total_steps)

    return train
