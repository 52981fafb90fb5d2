"""Run output: metrics.jsonl on resume, whole-file writes, and the command-line wrappers' exit
statuses."""

import json

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from data_prep import errors
from xrayjax import logging as runlog


def test_resume_drops_lines_past_the_checkpoint_and_a_line_cut_by_a_kill(tmp_path):
    lines = [json.dumps({"step": s, "loss": s / 10}) for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "lo')
    writer = runlog.MetricWriter(tmp_path, resume_step=3)
    assert [r["step"] for r in runlog.read_metrics(tmp_path)] == [1, 2, 3]
    writer.write(4, {"loss": np.float32(0.25)})
    writer.close()
    assert runlog.read_metrics(tmp_path)[-1] == {"step": 4, "loss": 0.25}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # Written whole: no temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tensorboard"]


def test_write_json_is_strict_and_whole(tmp_path):
    path = runlog.write_json(tmp_path / "a" / "eval.json", {"x": float("nan"), "y": np.int64(2)})
    assert json.loads(path.read_text()) == {"x": None, "y": 2}
    runlog.save_png(tmp_path / "a" / "grid.png", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "a" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["eval.json", "grid.png"]


def _raise(error: Exception):
    def body():
        raise error

    return body


def test_run_cli_exit_statuses(capsys, monkeypatch):
    """Bad input: one line, exit 2. A non-finite loss: exit 3. A bug: its traceback (exit 1)."""
    monkeypatch.delenv(errors.TRACEBACK_VARIABLE, raising=False)
    for error, status in (
        (errors.InputError("config.dtype='f16'; allowed: float32"), 2),
        (errors.MissingInput("no checkpoint in /w/checkpoints"), 2),
        (runlog.NonFiniteLoss("step 5: non-finite train/loss=nan"), 3),
    ):
        with pytest.raises(SystemExit) as exited:
            runlog.run_cli(_raise(error), quiet_libraries=False)
        assert exited.value.code == status
        assert capsys.readouterr().err == f"error: {error}\n"
    # An internal ValueError (shapes passed between the project's functions) escapes whole.
    with pytest.raises(ValueError, match="image shapes differ") as raised:
        runlog.run_cli(_raise(ValueError("image shapes differ")), quiet_libraries=False)
    assert not isinstance(raised.value, errors.InputError)
    assert capsys.readouterr().err == ""
    assert runlog.run_cli(lambda: None, quiet_libraries=False) is None


def _config_flags(tmp_path):
    """Fresh flags like xrayjax.main's, and a config file whose variant is checked."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=values)
    flags.DEFINE_integer("num", 0, "a number", flag_values=values)
    path = tmp_path / "experiment.py"
    path.write_text(
        "from configs import common\n\n\n"
        "def get_config(arg=None):\n"
        "    args = common.parse_arg(arg, runlocal=False, size=1)\n"
        "    if args.size == 13:\n"
        "        return args.size + 'px'  # a bug in the config file: a TypeError\n"
        "    return args\n"
    )
    return values, path


def test_bad_flags_and_config_variants_exit_2_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(errors.TRACEBACK_VARIABLE, raising=False)
    values, path = _config_flags(tmp_path)
    assert runlog.parse_flags(["prog", f"--config={path}:runlocal", "--num=2"], values) == ["prog"]
    assert values.config.runlocal is True and values.num == 2
    for arg, message in (
        (f"--config={path}:runlocal=ture", "runlocal='ture' is neither yes nor no"),
        (f"--config={path}:colour=blue", "unknown config variant 'colour'"),
        (f"--config={path}:size=big", "size='big' is not a whole number"),
        (f"--config={tmp_path / 'nope.py'}", f"--config: no config file {tmp_path / 'nope.py'}"),
        ("--num=many", "flag --num=many"),
    ):
        with pytest.raises(SystemExit) as exited:
            runlog.parse_flags(["prog", arg], _config_flags(tmp_path)[0])
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    # A bug in the config file (not a ValueError) keeps its traceback.
    with pytest.raises(flags.Error, match="unsupported operand"):
        runlog.parse_flags(["prog", f"--config={path}:size=13"], _config_flags(tmp_path)[0])
