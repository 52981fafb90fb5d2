"""`python -m xrayjax.main` in child processes, the way a user runs it: for the tests that kill a
run, resume it, or start several processes of one run.

The reference runs (`GAN` and `CLASSIFIER` with their overrides) are shared: conftest trains
each once per session, and the kill-and-resume and multi-host tests compare against them.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from xrayjax.models import layers

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 900

# The plain layer forms: at the tests' LLVM -O1 the reference CycleGAN's step compiles in 13-14 s
# of CPU time with them, 26-32 s with the fast CPU forms (docs/performance.md). Every form is
# checked against the plain one in tests/models/test_gan_models.py, and the device-count test in
# tests/steps/test_gan_engine.py trains the "auto" forms.
PLAIN_FORMS = {f"model.{field}": form for field, form in layers.PLAIN_FORMS.items()}
# 12 steps, checkpoints at 4, 8 and 12, a metrics line per step; one residual block compiles
# faster (the block count has its own tests).
GAN = "configs/cyclegan_forearm.py:cls=normal,data=phantom,runlocal"
GAN_FIELDS = {"log_every": 1, "model.num_blocks": 1, **PLAIN_FORMS}
GAN_OVERRIDES = tuple(f"--config.{path}={value}" for path, value in GAN_FIELDS.items())
GAN_STEPS = 12
# 24 natural + 2·4 synthetic images, batch 8: 4 steps per epoch, 4 epochs; checkpoints every 4.
CLASSIFIER = "configs/classifier_forearm.py:data=phantom,runlocal"
CLASSIFIER_OVERRIDES = (
    "--config.synthetic.per_class=4",
    "--config.num_epochs=4",
    "--config.log_every=1",
)
CLASSIFIER_STEPS = 16


def gan_config(data_dir):
    """The config object that `GAN` with `GAN_OVERRIDES` trains (for in-process runs)."""
    from xrayjax.tools import demo

    path, variant = GAN.split(":", 1)
    return demo.configure(
        pathlib.Path(path).stem, variant, {**GAN_FIELDS, "data_dir": str(data_dir)}
    )


def command(config: str, workdir, data_dir, *overrides: str) -> list[str]:
    """The command line that trains (or evaluates) `config` in `workdir`."""
    return [
        sys.executable,
        "-m",
        "xrayjax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        *overrides,
    ]


def device_env(devices: int = 4, process_id: int | None = None, port: int | None = None) -> dict:
    """Environment for a child with `devices` CPU devices, one of 2 processes if `process_id`."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    if process_id is not None:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(process_id),
        )
    return env


def run(config: str, workdir, data_dir, *overrides: str) -> subprocess.CompletedProcess:
    """Run to the end in one process × 4 devices; output captured."""
    return subprocess.run(
        command(config, workdir, data_dir, *overrides),
        cwd=ROOT,
        env=device_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def start(config: str, workdir, data_dir, *overrides: str) -> subprocess.Popen:
    """Start one process × 4 devices in the background, its output discarded."""
    return subprocess.Popen(
        command(config, workdir, data_dir, *overrides),
        cwd=ROOT,
        env=device_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(config: str, workdir, data_dir, *overrides: str) -> list:
    """Start one run as 2 processes × 2 devices over jax.distributed on 127.0.0.1."""
    return two_processes(command(config, workdir, data_dir, *overrides))


def two_processes(argv: list[str]) -> list:
    """Start `argv` as 2 processes × 2 devices over jax.distributed on 127.0.0.1."""
    port = _free_port()
    return [
        subprocess.Popen(
            argv,
            cwd=ROOT,
            env=device_env(2, i, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def finish(processes: list, timeout_s: float = TIMEOUT_S) -> list[tuple[str, str]]:
    """Wait for every process; assert each exited 0; their (stdout, stderr).

    Past `timeout_s` every process is killed: a process of a multi-process run that hangs in a
    collective ignores SIGTERM, and would outlive the test.
    """
    try:
        outputs = [p.communicate(timeout=timeout_s) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
            p.wait()
        raise
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outputs


def kill_at_checkpoint(processes: list, workdir: pathlib.Path, step: int) -> None:
    """SIGKILL every process as soon as checkpoint `step` exists (none may end before)."""
    deadline = time.time() + TIMEOUT_S
    while not (workdir / "checkpoints" / str(step)).exists():
        for p in processes:
            if p.poll() is not None:
                err = p.stderr.read()[-3000:] if p.stderr else ""
                raise AssertionError(f"the run ended before checkpoint {step}: {err}")
        assert time.time() < deadline, f"no checkpoint {step} after {TIMEOUT_S} s"
        time.sleep(0.02)
    for p in processes:
        p.send_signal(signal.SIGKILL)
        p.wait()


def metrics(workdir: pathlib.Path) -> list[dict]:
    """metrics.jsonl, one dict per line."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_state(workdir: pathlib.Path, step: int) -> dict:
    """The train state saved at `step`, as nested dicts of arrays."""
    with ocp.CheckpointManager(workdir / "checkpoints") as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]


def flat_arrays(tree) -> dict[str, np.ndarray]:
    """{path: array} over every leaf of a pytree."""
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }
