"""Run output on process 0: metrics.jsonl, TensorBoard events, progress bar, image grids,
and the NaN/Inf guard (run on every process, so they all stop together); the command-line
wrappers that end a command on bad input (exit 2) or a non-finite loss (exit 3)."""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import cv2
import jax
import numpy as np
from absl import flags
from tensorboardX import SummaryWriter
from tqdm import tqdm

from data_prep import errors, storage


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or Inf; the run stops and the last good checkpoint stays."""


def check_finite(step: int, metrics: dict[str, float]) -> None:
    """Raise NonFiniteLoss naming the step and every non-finite metric."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
    if bad:
        names = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteLoss(
            f"step {step}: non-finite {names}; training stopped, the latest checkpoint before "
            "this step is kept (lower the learning rate or check the data, then rerun to resume)"
        )


def run_cli(body: Callable[[], object], quiet_libraries: bool = True) -> None:
    """Run a command's body; bad input and a non-finite loss end it with one line and a status.

    Exit 2: bad input (config, data, workdir), raised as InputError before anything was written
    past the error (XRAYJAX_TRACEBACK=1 shows its traceback too). Exit 3: a non-finite loss
    stopped training. Anything else is a bug and keeps its traceback (exit 1).
    """
    from absl import logging as absl_logging

    if quiet_libraries:
        # orbax and grain log every save and worker at INFO; the progress bar says enough.
        absl_logging.set_verbosity(absl_logging.WARNING)
    status = errors.run_cli(body, {NonFiniteLoss: 3})
    if status:
        sys.exit(status)


def parse_flags(argv: list[str], flag_values: flags.FlagValues | None = None) -> list[str]:
    """absl flag parsing (an `app.run` flags_parser) where a bad flag, a config file that refuses
    its variant or a missing config file ends the command with one `error:` line and exit 2."""
    remaining = []
    parse = functools.partial(_parse_flags, argv, flag_values or flags.FLAGS)
    status = errors.run_cli(lambda: remaining.extend(parse()))
    if status:
        sys.exit(status)
    return remaining


def _parse_flags(argv: list[str], flag_values: flags.FlagValues) -> list[str]:
    """flag_values(argv), with bad input raised as InputError; a config file's bug propagates."""
    from ml_collections.config_flags import config_flags

    try:
        remaining = flag_values(argv)
    except flags.Error as err:
        cause = err  # the first exception raised, as a traceback shows it last
        while earlier := cause.__cause__ or (
            None if cause.__suppress_context__ else cause.__context__
        ):
            cause = earlier
        if cause is err or "\n" not in str(err):
            raise errors.InputError(f"{err} (--helpshort lists the flags)") from err
        # ml_collections reports an exception raised by a config file's get_config as
        # "flag --config=PATH:ARG: Error whilst parsing config file:" plus its traceback. A
        # ValueError there is the config refusing its variant (configs raise plain ValueError,
        # as they import only ml_collections); anything else is a bug in the config file.
        if not isinstance(cause, ValueError):
            raise
        raise errors.InputError(f"{str(err).split(': ', 1)[0]}: {cause}") from err
    for name in flag_values:
        flag = flag_values[name]
        if flag.present and isinstance(flag.parser, config_flags.ConfigFileFlagParser):
            # ml_collections defers a missing file's error to the config's first use.
            path = config_flags.get_config_filename(flag).split(":", 1)[0]
            if not os.path.isfile(path):
                raise errors.MissingInput(f"--{name}: no config file {path}")
    return remaining


class MetricWriter:
    """Appends `{"step": s, name: value, ...}` lines to metrics.jsonl and TensorBoard events.

    On resume, lines past the restored step (written after the last checkpoint by a run that
    was then killed) are dropped, so the file reads as if the run had never stopped.
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0):
        self.enabled = jax.process_index() == 0
        workdir = storage.as_path(workdir)
        self.path = workdir / "metrics.jsonl"
        self._tb = None
        if not self.enabled:
            return
        self._lines = []
        if self.path.exists():
            self._lines = [
                line
                for line in self.path.read_text().splitlines()
                if (step := _step_of(line)) is not None and step <= resume_step
            ]
        # Rewritten whole (never in place), so a kill here keeps the run's history.
        storage.write_text(self.path, "".join(line + "\n" for line in self._lines))
        # Cloud storage has no append: there the file is rewritten whole at each log step, and
        # TensorBoard events are written to a local folder and copied up after each flush.
        self._remote = storage.is_url(workdir)
        self._tb_target = workdir / "tensorboard"
        self._tb_dir = (
            pathlib.Path(tempfile.mkdtemp(prefix="xrayjax-tensorboard-"))
            if self._remote
            else pathlib.Path(self._tb_target)
        )
        self._tb = SummaryWriter(str(self._tb_dir), purge_step=resume_step + 1)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Record scalars for a step."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        # Strict JSON: an undefined value (a test AUC over one class) is written as null.
        line = json.dumps(json_safe({"step": int(step), **values}), allow_nan=False)
        self._lines.append(line)
        if self._remote:
            storage.write_text(self.path, "".join(x + "\n" for x in self._lines))
        else:
            with self.path.open("a") as f:
                f.write(line + "\n")
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()
        if self._remote:
            storage.copy_tree(self._tb_dir, self._tb_target)

    def close(self) -> None:
        """Flush and close the TensorBoard writer (and copy its events up, on cloud storage)."""
        if self._tb is not None:
            self._tb.close()
            if self._remote:
                storage.copy_tree(self._tb_dir, self._tb_target)
                shutil.rmtree(self._tb_dir, ignore_errors=True)
            self._tb = None


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a blank line or one cut short by a kill."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """All records of a run's metrics.jsonl; values written as null (undefined) read as NaN."""
    path = storage.as_path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: math.nan if v is None else v for k, v in r.items()} for r in records]


class Progress:
    """A progress bar on process 0: step, steps/s, images/s, ETA and the latest losses."""

    def __init__(self, total: int, initial: int, images_per_step: int, desc: str = "train"):
        self.enabled = jax.process_index() == 0
        self.images_per_step = images_per_step
        self._last = (initial, time.perf_counter())
        self._bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
            )
            if self.enabled
            else None
        )

    def update(self, step: int, metrics: dict[str, float] | None = None) -> None:
        """Move the bar to `step` and show throughput and a few losses."""
        if self._bar is None:
            return
        last_step, last_time = self._last
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        self._last = (step, now)
        postfix = {"img/s": f"{rate * self.images_per_step:.1f}"}
        for key, value in (metrics or {}).items():
            name = key.removeprefix("train/")
            # Totals only (loss, loss_g, loss_d); the per-pair terms are in metrics.jsonl.
            if name.startswith("loss") and name.count("_") <= 1:
                postfix[name] = f"{float(value):.3f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile rows of equally sized (H, W[, 1]) uint8 images into one uint8 image."""
    tiles = [[np.asarray(t).reshape(t.shape[0], t.shape[1]) for t in row] for row in rows]
    h, w = tiles[0][0].shape
    cols = max(len(row) for row in tiles)
    grid = np.full((len(tiles) * (h + pad) + pad, cols * (w + pad) + pad), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = tile
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a PNG atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    storage.write_bytes(path, encoded.tobytes())


def json_safe(value):
    """numpy → Python; NaN and ±inf → None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: str | os.PathLike, data):
    """Write strict JSON (NaN as null) atomically (see `storage.write_bytes`); returns the path."""
    return storage.write_text(path, json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")
