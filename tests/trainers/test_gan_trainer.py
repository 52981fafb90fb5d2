"""The GAN trainer end to end: outputs, resume, SIGKILL-and-resume equality, bad input."""

import json
import shutil

import main_process
import numpy as np
import pytest
from main_process import GAN, GAN_OVERRIDES, GAN_STEPS


def _run(workdir, data_dir, *overrides):
    return main_process.run(GAN, workdir, data_dir, *GAN_OVERRIDES, *overrides)


def test_run_writes_every_output_and_resumes(gan_reference, phantom_data_dir):
    workdir, result = gan_reference
    records = main_process.metrics(workdir)
    assert [r["step"] for r in records] == list(range(1, GAN_STEPS + 1))
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
    assert len(main_process.metrics(workdir)) == GAN_STEPS


def test_sigkill_and_rerun_gives_the_same_run(gan_reference, phantom_data_dir, tmp_path):
    reference, _ = gan_reference
    workdir = tmp_path / "killed"
    process = main_process.start(GAN, workdir, phantom_data_dir, *GAN_OVERRIDES)
    main_process.kill_at_checkpoint([process], workdir, 4)
    assert not (workdir / "checkpoints" / "12").exists()
    resumed = _run(workdir, phantom_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stdout
    expected = (reference / "metrics.jsonl").read_text()
    assert (workdir / "metrics.jsonl").read_text() == expected
    want = main_process.flat_arrays(main_process.checkpoint_state(reference, 12)["gen_params"])
    got = main_process.flat_arrays(main_process.checkpoint_state(workdir, 12)["gen_params"])
    assert want.keys() == got.keys() and len(want) > 10
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_bad_input_is_refused_before_training(phantom_data_dir, tmp_path, gan_reference):
    result = _run(tmp_path / "w1", phantom_data_dir, "--config.global_batch=3")
    assert result.returncode == 2
    assert "global batch 3 does not divide by the 4 devices" in result.stderr
    result = _run(tmp_path / "w2", tmp_path / "empty")
    assert (
        result.returncode == 2 and "python -m data_prep.phantom --preset configs" in result.stderr
    )
    result = _run(tmp_path / "w3", phantom_data_dir, "--config.model.featurs=3")
    assert result.returncode != 0 and "featurs" in result.stderr
    assert not (tmp_path / "w1").exists() or not list((tmp_path / "w1").rglob("*.jsonl"))
    # A workdir holding a different model is refused, and its checkpoints stay as they were.
    reference, _ = gan_reference
    before = sorted(p.name for p in (reference / "checkpoints").iterdir())
    result = _run(reference, phantom_data_dir, "--config.model.features=16")
    assert result.returncode == 2 and "does not match the configured model" in result.stderr
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == before


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    gan_reference, phantom_data_dir, tmp_path, monkeypatch, capsys
):
    # In this process, with the reference run's config: its compiled step is reused from the
    # cache (a changed learning rate or step count would be a new program).
    from xrayjax import logging as runlog
    from xrayjax import parallel
    from xrayjax.trainers import gan

    config = main_process.gan_config(phantom_data_dir)
    # The reference run as it stood at its first checkpoint.
    reference, _ = gan_reference
    workdir = tmp_path / "nan"
    shutil.copytree(reference, workdir)
    for step in (8, 12):
        shutil.rmtree(workdir / "checkpoints" / str(step))
    # Step 5's batch of domain A is NaN, as a corrupt input would make it after decoding.
    real = parallel.global_batch_array

    def poisoned(mesh, local_batch):
        local_batch["A"]["image"] = np.full_like(local_batch["A"]["image"], np.nan)
        return real(mesh, local_batch)

    monkeypatch.setattr(parallel, "global_batch_array", poisoned)
    with pytest.raises(runlog.NonFiniteLoss, match="step 5: non-finite") as stopped:
        gan.train(config, workdir)
    assert "train/loss_g=nan" in str(stopped.value)
    assert "resuming at step 4" in capsys.readouterr().out
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [4]
    # The finite steps stay logged; nothing from the failed step on.
    assert [r["step"] for r in main_process.metrics(workdir)] == [1, 2, 3, 4]
