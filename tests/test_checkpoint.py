"""Resuming past a damaged latest checkpoint: a tiny training (a 4-float state and a grain
iterator) saved every 2 steps, keep 3, whose step-8 array files are then truncated as a full
disk or a bad copy leaves them."""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xrayjax import checkpoint, parallel

EVERY, KEEP, STEPS = 2, 3, 8


def _init(rng):
    return {"step": jnp.zeros((), jnp.int32), "params": {"w": jax.random.normal(rng, (4,))}}


def _update(state, x):
    """One training step: every step and every data element changes the parameters."""
    step = state["step"] + 1
    return {"step": step, "params": {"w": state["params"]["w"] * 0.5 + x * step}}


def _data():
    return iter(grain.MapDataset.range(1000).map(lambda i: np.float32(i % 7)).to_iter_dataset())


def _sharding():
    return parallel.replicated(parallel.make_mesh())


def _train(workdir, until):
    """Run (or resume) to step `until`, saving every EVERY steps; returns the final state."""
    ckpt = checkpoint.Checkpointer(workdir, EVERY, KEEP)
    data = _data()
    state = ckpt.restore_or_init(_init, jax.random.PRNGKey(0), _sharding(), data)
    for step in range(int(state["step"]) + 1, until + 1):
        state = _update(state, next(data))
        ckpt.save(step, state, data)
    ckpt.close()
    return state


def _uninterrupted(until):
    """The state after `until` steps, computed without any checkpoint."""
    state, data = _init(jax.random.PRNGKey(0)), _data()
    for _ in range(until):
        state = _update(state, next(data))
    return state


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _truncate_arrays(step_dir):
    """Truncate every array data file (OCDBT's d/ folders) of a step to half its size."""
    files = [
        os.path.join(root, name)
        for root, _, names in os.walk(step_dir / "state")
        if os.path.basename(root) == "d"
        for name in names
    ]
    assert files, f"no array files under {step_dir}"
    for path in files:
        os.truncate(path, os.path.getsize(path) // 2)
    return sorted(os.path.relpath(p, step_dir) for p in files)


def _files(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.fixture
def trained(tmp_path):
    """A workdir trained to step 8: checkpoints 4, 6, 8."""
    _train(tmp_path, STEPS)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4, 6, 8]
    return tmp_path


def test_unreadable_latest_step_is_moved_aside_and_the_previous_one_resumed(trained, capsys):
    directory = trained / "checkpoints"
    files_before = _files(directory / "8")
    truncated = _truncate_arrays(directory / "8")
    capsys.readouterr()

    ckpt = checkpoint.Checkpointer(trained, EVERY, KEEP)
    data = _data()
    state = ckpt.restore_or_init(_init, jax.random.PRNGKey(0), _sharding(), data)
    _assert_same(state, _uninterrupted(6))
    assert data.get_state() == {"next_index": 6}  # the data position of step 6, not 8
    # orbax's own step list no longer has step 8, in this manager and in a fresh one.
    assert ckpt.latest_step() == 6
    assert checkpoint.Checkpointer(trained, EVERY, KEEP).latest_step() == 6
    ckpt.close()

    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert "step 8" in line and str(directory) in line and "restored step 6 instead" in line
    assert "\n" not in line and len(line) < 600, line

    # Moved aside, whole (the truncated files included), outside what orbax lists.
    assert not (directory / "8").exists()
    assert sorted(int(p.name) for p in directory.iterdir()) == [4, 6]
    aside = trained / "checkpoints_unreadable" / "8"
    assert str(aside) in line
    assert _files(aside) == files_before
    assert "could not be read back" in (aside.parent / "README.txt").read_text()
    assert set(truncated) <= set(_files(aside))

    # Training on from step 6 lands exactly where the uninterrupted run did.
    _assert_same(_train(trained, STEPS), _uninterrupted(STEPS))
    assert sorted(int(p.name) for p in directory.iterdir()) == [4, 6, 8]


def test_all_steps_unreadable_is_a_clear_error_and_moves_nothing(trained, capsys):
    directory = trained / "checkpoints"
    for step in (4, 6, 8):
        _truncate_arrays(directory / str(step))
    files_before = _files(directory)
    capsys.readouterr()
    # Twice: left in place, the steps stop every rerun (moved, the next run would start fresh).
    for _ in range(2):
        ckpt = checkpoint.Checkpointer(trained, EVERY, KEEP)
        with pytest.raises(checkpoint.CheckpointUnreadable, match=str(directory)) as raised:
            ckpt.restore_or_init(_init, jax.random.PRNGKey(0), _sharding(), _data())
        ckpt.close()
        message = str(raised.value)
        assert "every checkpoint" in message and "steps 8, 6, 4" in message, message
        assert "OUT_OF_RANGE" in message and "\n" not in message and len(message) < 600, message
        assert _files(directory) == files_before
        assert not (trained / "checkpoints_unreadable").exists()
    assert capsys.readouterr().out == ""


def test_a_second_unreadable_copy_of_a_step_does_not_overwrite_the_first(trained):
    directory = trained / "checkpoints"
    _truncate_arrays(directory / "8")
    _assert_same(
        checkpoint.Checkpointer(trained, EVERY, KEEP).restore_like(_init, _sharding()),
        _uninterrupted(6),
    )
    _train(trained, STEPS)  # saves step 8 again
    _truncate_arrays(directory / "8")
    ckpt = checkpoint.Checkpointer(trained, EVERY, KEEP)
    _assert_same(ckpt.restore_like(_init, _sharding()), _uninterrupted(6))
    ckpt.close()
    aside = trained / "checkpoints_unreadable"
    assert sorted(p.name for p in aside.iterdir()) == ["8", "8_2", "README.txt"]


def test_config_mismatch_still_raises_and_moves_nothing(trained):
    def bigger(rng):
        return {"step": jnp.zeros((), jnp.int32), "params": {"w": jnp.zeros((5,))}}

    directory = trained / "checkpoints"
    ckpt = checkpoint.Checkpointer(trained, EVERY, KEEP)
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"params/w: checkpoint \(4,\)"):
        ckpt.restore_or_init(bigger, jax.random.PRNGKey(0), _sharding())
    ckpt.close()
    assert sorted(int(p.name) for p in directory.iterdir()) == [4, 6, 8]
    assert not (trained / "checkpoints_unreadable").exists()


def test_a_shape_error_outside_params_is_not_taken_for_damage(trained):
    """orbax's own shape check (for leaves `_check_shapes` skips) is a config error too."""

    def other_step(rng):
        return {"step": jnp.zeros((3,), jnp.int32), "params": {"w": jnp.zeros((4,))}}

    ckpt = checkpoint.Checkpointer(trained, EVERY, KEEP)
    with pytest.raises(ValueError, match="not compatible with the stored shape"):
        ckpt.restore_or_init(other_step, jax.random.PRNGKey(0), _sharding())
    ckpt.close()
    assert sorted(int(p.name) for p in (trained / "checkpoints").iterdir()) == [4, 6, 8]
    assert not (trained / "checkpoints_unreadable").exists()
