"""Bad input ends a command with one line and exit status 2; any other error keeps its traceback."""

import pytest

from data_prep import builder, errors


def _raise(error: Exception):
    def main(argv=None):
        raise error

    return main


def test_bad_input_is_one_line_and_status_2(capsys, monkeypatch):
    monkeypatch.delenv(errors.TRACEBACK_VARIABLE, raising=False)
    assert issubclass(errors.MissingInput, FileNotFoundError)
    for error in (errors.InputError("--num must be 1"), errors.MissingInput("no folder x")):
        assert builder.run_cli(_raise(error), []) == 2
        assert capsys.readouterr().err == f"error: {error}\n"
    assert builder.run_cli(lambda argv: None, []) == 0
    assert errors.run_cli(_raise(KeyError("k")), {KeyError: 5}) == 5


def test_an_internal_error_keeps_its_traceback(capsys, monkeypatch):
    monkeypatch.delenv(errors.TRACEBACK_VARIABLE, raising=False)
    # A plain ValueError or FileNotFoundError is a bug (or an outage), not the user's input.
    for error in (ValueError("shapes differ"), FileNotFoundError("lost a temp file")):
        with pytest.raises(type(error), match=str(error)):
            builder.run_cli(_raise(error), [])
        assert capsys.readouterr().err == ""


def test_traceback_variable_shows_bad_input_too(monkeypatch):
    monkeypatch.setenv(errors.TRACEBACK_VARIABLE, "1")
    with pytest.raises(errors.InputError, match="bad"):
        errors.run_cli(_raise(errors.InputError("bad")))
