"""Checkpoints: the train state and the data-iterator state, saved together by orbax.

Resume order: build the abstract state (shapes and shardings) → restore the latest step's
state and iterator position → continue from that step. Every process takes part in saves;
orbax writes to a temporary folder and commits it whole, so a run killed mid-save leaves the
previous checkpoint as the latest.
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from data_prep import storage


class CheckpointMismatch(ValueError):
    """The workdir's checkpoint does not fit the configured model."""


def _write_whole_arrays_on_cpu() -> None:
    """On the CPU backend, every replica of a replicated array lives in one process's memory:
    orbax's replica-parallel saving (each replica writing a slice) there only adds an eager
    slice per array and device, and a small compile per shape (about 5 s per run in the tests).
    Saved bytes and layout are the same either way."""
    if jax.default_backend() == "cpu":
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
        )


class Checkpointer:
    """Periodic, asynchronous saves of (state, data iterator) under workdir/checkpoints."""

    def __init__(self, workdir: str | os.PathLike, every: int, keep: int = 3):
        _write_whole_arrays_on_cpu()
        # A URL stays a URL: orbax writes gs:// directly (an object write there is atomic).
        self.directory = storage.as_path(workdir) / "checkpoints"
        self.every = every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=1, enable_async_checkpointing=True, create=True
        )
        # Naming the handlers up front lets metadata be read before a restore.
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def restore(self, abstract_state, data_iterator=None, step: int | None = None):
        """The saved state (placed as `abstract_state` says) at `step` (default: latest).

        The data iterator, when given, is moved to the saved position in place.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        self._check_shapes(step, abstract_state)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def restore_like(self, init, sharding, data_iterator=None):
        """The latest checkpoint's state, shaped as `init(rng)` makes it, placed with `sharding`.

        The data iterator, when given, is moved to the saved position in place.
        """
        abstract = abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), sharding)
        return self.restore(abstract, data_iterator)

    def restore_or_init(self, init, rng, sharding, data_iterator=None):
        """The latest checkpoint's state (data position restored), else `init(rng)`, placed
        with `sharding`."""
        if self.latest_step() is None:
            return jax.jit(init, out_shardings=sharding)(rng)
        return self.restore_like(init, sharding, data_iterator)

    def _check_shapes(self, step: int, abstract_state) -> None:
        saved = self._manager.item_metadata(step)["state"]
        if saved is None:
            return
        saved_leaves = dict(_flatten_with_paths(saved))
        wanted = dict(_flatten_with_paths(abstract_state))
        problems = []
        for path, leaf in wanted.items():
            if path not in saved_leaves:
                problems.append(f"{path} is missing from the checkpoint")
            elif tuple(saved_leaves[path].shape) != tuple(leaf.shape):
                problems.append(
                    f"{path}: checkpoint {tuple(saved_leaves[path].shape)} vs "
                    f"config {tuple(leaf.shape)}"
                )
        problems += [
            f"{p} is in the checkpoint but not in the model"
            for p in saved_leaves
            if p not in wanted
        ]
        if problems:
            listed = "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
            raise CheckpointMismatch(
                f"the checkpoint at step {step} in {self.directory} does not match the "
                f"configured model ({listed}); use a new --workdir for a different model"
            )

    def save(self, step: int, state, data_iterator=None, force: bool = False) -> bool:
        """Save when `step` is a multiple of `every` (or `force`); returns whether it saved."""
        if not force and step % self.every:
            return False
        if self.latest_step() == step:
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release resources."""
        self._manager.wait_until_finished()
        self._manager.close()


def _flatten_with_paths(tree):
    """(path, leaf) for the parameter leaves; paths as 'gen_params/AB/Conv_0/kernel'.

    Only parameters are compared: their trees are plain dicts, spelled the same in the
    checkpoint's metadata and in the live state (dataclasses and namedtuples are not).
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        if hasattr(leaf, "shape") and any(n.endswith("params") for n in names[:1]):
            yield "/".join(names), leaf


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` (concrete or abstract) with the given sharding."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), state
    )
