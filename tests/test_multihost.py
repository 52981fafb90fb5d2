"""Two processes × two CPU devices (jax.distributed on 127.0.0.1) train exactly like one
process × four devices: same global batches, same losses, checkpoint and resume included.

Each run is killed at a checkpoint and resumed, then compared with the uninterrupted
one-process reference run of the same command (conftest).
"""

import json

import main_process
import pytest
from main_process import (
    CLASSIFIER,
    CLASSIFIER_OVERRIDES,
    CLASSIFIER_STEPS,
    GAN,
    GAN_OVERRIDES,
    GAN_STEPS,
)


def _kill_and_resume(config, overrides, workdir, data_dir, kill_at):
    """Two processes killed at checkpoint `kill_at`, then two more finish the run."""
    processes = main_process.start_two_processes(config, workdir, data_dir, *overrides)
    main_process.kill_at_checkpoint(processes, workdir, kill_at)
    outputs = main_process.finish(
        main_process.start_two_processes(config, workdir, data_dir, *overrides)
    )
    assert f"resuming at step {kill_at}" in outputs[0][0]
    assert outputs[1][0].count("resuming") == 0  # only process 0 reports
    return outputs


def _drift(expected, got, keys):
    """Per logged step, the largest relative difference over `keys`."""
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    return [
        max(abs(have[k] - want[k]) / max(abs(want[k]), 1e-6) for k in keys)
        for want, have in zip(expected, got, strict=True)
    ]


# First in this file, the first file `make test` runs (conftest.LONG_FILES): it builds the
# reference classifier while the other process builds the reference CycleGAN the next test needs.
@pytest.mark.slow
def test_classifier_two_processes_match_one_process_and_resume(
    classifier_reference, phantom_data_dir, tmp_path
):
    reference, _, reference_eval = classifier_reference
    multi = tmp_path / "multi"
    _kill_and_resume(CLASSIFIER, CLASSIFIER_OVERRIDES, multi, phantom_data_dir, kill_at=8)
    expected, got = main_process.metrics(reference), main_process.metrics(multi)
    assert [r["step"] for r in got] == list(range(1, CLASSIFIER_STEPS + 1))
    drift = _drift(expected, got, ["train/loss"])
    assert drift[0] < 1e-5, drift
    assert max(drift) < 0.05, drift
    # The test set is split over both processes' devices and gathered: every image is counted
    # once, with its own label (the confusion matrix's rows are the true classes).
    want, have = json.loads(reference_eval), json.loads((multi / "eval.json").read_text())
    assert have["num_images"] == want["num_images"] == 12
    assert [sum(row) for row in have["confusion_matrix"]] == [
        sum(row) for row in want["confusion_matrix"]
    ]


@pytest.mark.slow
def test_gan_two_processes_match_one_process_and_resume(gan_reference, phantom_data_dir, tmp_path):
    reference, _ = gan_reference
    multi = tmp_path / "multi"
    _kill_and_resume(GAN, GAN_OVERRIDES, multi, phantom_data_dir, kill_at=4)
    expected, got = main_process.metrics(reference), main_process.metrics(multi)
    assert [r["step"] for r in got] == list(range(1, GAN_STEPS + 1))
    keys = [k for k in expected[0] if k != "step"]
    drift = _drift(expected, got, keys)
    # Step 1 sees identical data and parameters: only the all-reduce order differs (gloo across
    # processes). Adam then turns rounding in near-zero gradients (e.g. conv biases before
    # instance norm) into full-size updates, so the adversarial game drifts by a few parts per
    # thousand per step; a data or sharding mistake would differ far more, and at step 1.
    assert drift[0] < 1e-5, drift
    assert max(drift) < 0.05, drift
