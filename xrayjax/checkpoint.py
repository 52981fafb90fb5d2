"""Checkpoints: the train state and the data-iterator state, saved together by orbax.

Resume order: build the abstract state (shapes and shardings) → restore the latest step's
state and iterator position → continue from that step. Every process takes part in saves;
orbax writes to a temporary folder and commits it whole, so a run killed mid-save leaves the
previous checkpoint as the latest. A committed step whose files were damaged later (a full
disk, a bad copy) is moved aside to workdir/checkpoints_unreadable/ and the step before it
resumed, once some older step reads back.
"""

from __future__ import annotations

import json
import os
import re

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from data_prep import errors, storage


class CheckpointMismatch(errors.InputError):
    """The workdir's checkpoint does not fit the configured model."""


class CheckpointUnreadable(errors.InputError):
    """No checkpoint in the workdir can be read back: every step's files are damaged."""


# TensorStore reports a failed read as ValueError("CODE: ..."). These codes mean the stored bytes
# are missing, short or malformed. Others (UNAVAILABLE, DEADLINE_EXCEEDED, PERMISSION_DENIED, ...)
# are about the storage service or credentials: a retry can succeed, so they are not damage.
_DAMAGE_CODES = ("OUT_OF_RANGE", "DATA_LOSS", "NOT_FOUND", "FAILED_PRECONDITION")

_UNREADABLE_NOTE = """\
Checkpoint steps of {directory} whose files could not be read back (cut short by a full disk or a
bad copy, for example), moved here whole when a run resumed from an older step. Nothing reads
them any more: inspect or delete them.
"""


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

        The data iterator, when given, is moved to the saved position in place. Without `step`,
        steps whose files cannot be read are skipped for the newest readable one and then moved
        aside (see `_set_aside`); when none reads back, CheckpointUnreadable and nothing moved.
        """
        if step is not None:
            return self._restore_step(step, abstract_state, data_iterator)
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise errors.MissingInput(f"no checkpoint in {self.directory}")
        unreadable = []  # (step, short reason), newest first
        for candidate in steps:
            try:
                state = self._restore_step(candidate, abstract_state, data_iterator)
            except Exception as err:
                reason = self._damage(candidate, err)
                if reason is None:
                    raise  # a config mismatch or a storage outage: not the step's files
                unreadable.append((candidate, reason))
                continue
            self._set_aside(unreadable, candidate)
            return state
        # Moving every step aside would leave checkpoints/ empty, and the next run would start
        # fresh without a word; left in place, the run stops here each time until someone acts.
        raise CheckpointUnreadable(
            f"every checkpoint in {self.directory} is unreadable (steps "
            f"{', '.join(str(s) for s, _ in unreadable)}; step {unreadable[0][0]}: "
            f"{unreadable[0][1]}); nothing was moved: to start over, move {self.directory} "
            "aside (or use a new --workdir)"
        )

    def _restore_step(self, step: int, abstract_state, data_iterator=None):
        """The state saved at `step` (shapes checked first), the data iterator moved in place."""
        self._check_shapes(step, abstract_state)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def _step_dir(self, step: int) -> epath.Path:
        # The manager's default step name format: the bare number, no prefix or padding.
        return self.directory / str(step)

    def _damage(self, step: int, err: Exception) -> str | None:
        """A short reason when `err` (from restoring `step`) says the step's files are damaged;
        None when it is something else, to be raised as it is."""
        if isinstance(err, CheckpointMismatch):
            return None
        text = str(err).strip()
        first = text.splitlines()[0] if text else ""
        step_dir = str(self._step_dir(step))
        if isinstance(err, json.JSONDecodeError):  # a metadata file cut short or overwritten
            return f"damaged JSON: {first}"
        if isinstance(err, KeyError) and not (self._step_dir(step) / "state").exists():
            return "its state/ folder is missing"
        if isinstance(err, (FileNotFoundError, ValueError)) and step_dir in first:
            # A file of the step is missing (grain says so as a ValueError).
            if isinstance(err, FileNotFoundError) or first.endswith("does not exist."):
                return first.replace(step_dir + "/", "")[:300]
        code, _, detail = first.partition(": ")
        if not isinstance(err, ValueError) or code not in _DAMAGE_CODES:
            return None
        # TensorStore's line nests every layer ("Error opening ...: Error reading ... file
        # "...": cause") and ends with the whole spec as JSON: keep the code, the last file
        # named and what follows it.
        detail = detail.split(" [tensorstore_spec=")[0]
        files = re.findall(r'file "([^"]+)"', detail)
        if not files:
            return f"{code}: {detail.rsplit(': ', 1)[-1]}"[:300]
        where = files[-1].removeprefix(step_dir).lstrip("/")
        cause = detail.rsplit(f'file "{files[-1]}"', 1)[-1].removeprefix(": ")
        return (f"{code} in {where}" + (f": {cause}" if cause else ""))[:300]

    def _set_aside(self, unreadable: list[tuple[int, str]], restored: int) -> None:
        """Move the unreadable steps (all newer than `restored`) out of orbax's sight: process 0
        moves them, every process then reloads the manager's step list.

        They must go: orbax counts the newest step folder as the latest, and would refuse to save
        any step up to it. Moved, not deleted, so the files stay there to inspect or recover.
        """
        # Every process restores, each on its own: all must have restored the same step past the
        # same unreadable ones before anything moves.
        skipped = [s for s, _ in unreadable]
        try:
            _sync(f"xrayjax: restored step {restored}, unreadable {skipped}")
        except AssertionError as err:
            raise CheckpointUnreadable(
                f"the processes read different steps from {self.directory} (process "
                f"{jax.process_index()}: step {restored}, unreadable {skipped}): a file that only "
                "some of them read is damaged; nothing was moved"
            ) from err
        if not unreadable:
            return
        if jax.process_index() == 0:
            for step, reason in unreadable:
                target = self._aside_path(step)
                note = target.parent / "README.txt"
                if not note.exists():
                    # Also makes the folder exist on gs://, where a folder is only a name prefix
                    # and epath refuses to rename into a folder that does not exist.
                    target.parent.mkdir(parents=True, exist_ok=True)
                    storage.write_text(note, _UNREADABLE_NOTE.format(directory=self.directory))
                self._step_dir(step).rename(target)
                print(
                    f"checkpoint step {step} in {self.directory} is unreadable ({reason}); "
                    f"moved aside to {target}; restored step {restored} instead",
                    flush=True,
                )
        _sync(f"xrayjax: moved aside {skipped}")
        # The manager caches its step list; without a reload it would still report the old
        # latest step and skip or refuse the saves up to it.
        self._manager.reload()

    def _aside_path(self, step: int) -> epath.Path:
        """A free folder for `step` in workdir/checkpoints_unreadable: outside checkpoints/, so
        neither orbax nor anything listing the steps there sees it. A later copy of the same
        step gets `<step>_2`, `<step>_3`, ... rather than overwrite the first."""
        root = self.directory.parent / f"{self.directory.name}_unreadable"
        target, n = root / str(step), 1
        while target.exists():
            n += 1
            target = root / f"{step}_{n}"
        return target

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


def _sync(name: str) -> None:
    """A barrier across processes that fails loudly when they arrive under different names."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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
