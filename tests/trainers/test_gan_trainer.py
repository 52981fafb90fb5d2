"""The GAN trainer end to end: outputs, resume, SIGKILL-and-resume equality, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

CONFIG = "configs/cyclegan_forearm.py:cls=normal,data=phantom,runlocal"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(workdir, data_dir, config=CONFIG, *overrides):
    return [
        sys.executable,
        "-m",
        "xrayjax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        *overrides,
    ]


def _run(*args, **kwargs):
    return subprocess.run(
        _command(*args, **kwargs), cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def _final_params(workdir, step=12):
    with ocp.CheckpointManager(workdir / "checkpoints") as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flat(value, f"{prefix}/{key}")
    else:
        yield prefix, np.asarray(tree)


@pytest.fixture(scope="module")
def uninterrupted(phantom_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = _run(workdir, phantom_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_run_writes_every_output_and_resumes(uninterrupted, phantom_data_dir):
    workdir, result = uninterrupted
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert {"train/loss_g", "train/loss_d", "train/loss_g_cycle", "train/lr_g"} <= set(records[0])
    assert records[-1]["train/lr_g"] == 0.0  # the schedule ends at exactly 0
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (workdir / "samples").iterdir()) == [
        "step_00000006.png",
        "step_00000012.png",
    ]
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [4, 8, 12]
    assert json.loads((workdir / "config.json").read_text())["loss"]["cycle_weight"] == 10.0
    again = _run(workdir, phantom_data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at step 12 of 12" in again.stdout
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 6


def test_sigkill_and_rerun_gives_the_same_run(uninterrupted, phantom_data_dir, tmp_path):
    reference, _ = uninterrupted
    workdir = tmp_path / "killed"
    process = subprocess.Popen(
        _command(workdir, phantom_data_dir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not (workdir / "checkpoints" / "4").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "checkpoints" / "12").exists()
    resumed = _run(workdir, phantom_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stdout
    expected = (reference / "metrics.jsonl").read_text()
    assert (workdir / "metrics.jsonl").read_text() == expected
    want = dict(_flat(_final_params(reference)["gen_params"]))
    got = dict(_flat(_final_params(workdir)["gen_params"]))
    assert want.keys() == got.keys() and len(want) > 10
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_bad_input_is_refused_before_training(phantom_data_dir, tmp_path, uninterrupted):
    result = _run(tmp_path / "w1", phantom_data_dir, CONFIG, "--config.global_batch=3")
    assert result.returncode == 2
    assert "global batch 3 does not divide by the 4 devices" in result.stderr
    result = _run(tmp_path / "w2", tmp_path / "empty", CONFIG)
    assert result.returncode == 2 and "python -m data_prep.phantom --preset demo" in result.stderr
    result = _run(tmp_path / "w3", phantom_data_dir, CONFIG, "--config.model.featurs=3")
    assert result.returncode != 0 and "featurs" in result.stderr
    assert not (tmp_path / "w1").exists() or not list((tmp_path / "w1").rglob("*.jsonl"))
    # A workdir holding a different model is refused, and its checkpoints stay as they were.
    reference, _ = uninterrupted
    before = sorted(p.name for p in (reference / "checkpoints").iterdir())
    result = _run(reference, phantom_data_dir, CONFIG, "--config.model.features=16")
    assert result.returncode == 2 and "does not match the configured model" in result.stderr
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == before


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(phantom_data_dir, tmp_path):
    workdir = tmp_path / "nan"
    first = _run(workdir, phantom_data_dir, CONFIG, "--config.total_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    # Resume with a learning rate that turns the parameters into NaN at step 5.
    result = _run(
        workdir, phantom_data_dir, CONFIG, "--config.total_steps=12", "--config.optim.gen.lr=nan"
    )
    assert result.returncode == 3
    assert "step 6: non-finite" in result.stderr and "train/loss_g=nan" in result.stderr
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [4]
    steps = [
        json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4]
