"""The layer profiler: its rows follow the asked widths and batch."""

from __future__ import annotations

from xrayjax.tools import profile_layers


def test_rows_follow_the_features_and_batch_asked_for(capsys):
    profile_layers.main(
        ["--sizes", "16", "--batch", "2", "--features", "4", "--repeats", "1", "--only", "G block"]
    )
    out = capsys.readouterr().out
    assert "batch 2" in out.splitlines()[0]
    rows = [line.split() for line in out.splitlines() if "G block" in line]
    # 4 features: the residual blocks run at 4·4 channels on 16 / 4 = 4 px maps
    assert rows and all(row[:5] == ["16", "G", "block", "3x3", "16->16"] for row in rows)
    forms = {
        "valid/xla",
        "valid/mm",
        "same_crop/xla",
        "same_crop/mm",
        "winograd/xla",
        "winograd/wino",
    }
    assert {row[5] for row in rows} == forms
    # "auto" (the star) on CPU: the plain conv with XLA's weight gradient
    assert [row[5] for row in rows if "*" in row] == ["valid/xla"]
    # times in ms with one decimal: a 4-px conv can print 0.0, never a negative or a non-number
    assert all(float(value) >= 0 for row in rows for value in row[-3:])


def test_downsampling_rows_time_every_form(capsys):
    profile_layers.main(["--sizes", "16", "--features", "2", "--repeats", "1", "--only", "G down"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if "G down" in line]
    assert [row[4] for row in rows] == ["2->4"] * 3 + ["4->8"] * 3
    assert [row[5] for row in rows[:3]] == ["conv/xla", "conv/mm", "taps"]
    # "auto" (the star) is the plain conv with XLA's weight gradient
    assert ["*" in row for row in rows] == [True, False, False] * 2
