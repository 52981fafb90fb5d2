"""The demo orchestrator (stages skipped when done, times kept across an interruption, stage
names checked) and its report (every section, whatever has run; the chance reading)."""

import json

import pytest

from xrayjax import demo, report


def _stage(name, log, fail=False):
    """A stage that writes `name.done` (or fails before writing anything)."""

    def run(workdir):
        log.append(name)
        if fail:
            raise RuntimeError(f"{name} broke")
        (workdir / f"{name}.done").write_text("ok")

    return demo.Stage(name, f"make {name}", run, lambda w: (w / f"{name}.done").exists())


def test_every_real_stage_is_undone_in_an_empty_workdir(tmp_path):
    names = [stage.name for stage in demo.STAGES]
    assert names[0] == "prepare" and names[-1] == "report" and len(set(names)) == len(names)
    assert not any(stage.done(tmp_path) for stage in demo.STAGES)


def test_done_stages_are_skipped_and_an_interrupted_run_continues(tmp_path, monkeypatch):
    log = []
    stages = (_stage("a", log), _stage("b", log, fail=True), _stage("c", log))
    monkeypatch.setattr(demo, "STAGES", stages)
    (tmp_path / "a.done").write_text("ok")
    with pytest.raises(RuntimeError, match="b broke"):
        demo.run(tmp_path)
    assert log == ["b"]  # a was done already; c never started
    assert not (tmp_path / "stage_times.json").exists()  # no stage finished

    # The rerun (b fixed) starts at b, and the times of stages run so far stay recorded.
    monkeypatch.setattr(demo, "STAGES", (stages[0], _stage("b", log), stages[2]))
    times = demo.run(tmp_path)
    assert log == ["b", "b", "c"] and set(times) == {"b", "c"}
    assert json.loads((tmp_path / "stage_times.json").read_text()) == times
    assert demo.run(tmp_path) == times and log == ["b", "b", "c"]  # all done: nothing runs

    (tmp_path / "c.done").unlink()
    demo.run(tmp_path, only=["c"])
    assert log[-1] == "c" and (tmp_path / "c.done").exists()


def test_unknown_stage_names_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "STAGES", (_stage("a", []),))
    with pytest.raises(ValueError, match="unknown stage.*tarnslate; the stages are: a"):
        demo.run(tmp_path, only=["tarnslate"])
    assert not (tmp_path / "a.done").exists()
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--workdir", str(tmp_path), "--only", "tarnslate"])
    assert exit_info.value.code == 2 and "tarnslate" in capsys.readouterr().err


def _ablation_run(workdir, name, low, high):
    run = workdir / "ablation" / name
    run.mkdir(parents=True)
    (run / "eval.json").write_text(
        json.dumps({"roc_auc": (low + high) / 2, "roc_auc_ci": [low, high]})
    )


def test_report_has_every_section_before_anything_has_run(tmp_path):
    text = report.write_demo_report(tmp_path).read_text()
    for heading in (
        "## Classifier ablation",
        "## Translation",
        "## Segmentation",
        "## Radial inclination on 256×256",
        "## Time per stage",
    ):
        assert heading in text, heading
    assert "The ablation has not run yet." in text
    assert not list(tmp_path.glob("*.tmp"))


def test_report_says_whether_the_ablation_beats_chance(tmp_path):
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "table.md").write_text("| synthetic / class | runs |\n|---|---|\n")
    _ablation_run(tmp_path, "syn0_seed0", 0.40, 0.62)
    _ablation_run(tmp_path, "syn0_seed1", 0.45, 0.70)
    assert "None of the 2 runs separates the classes" in report.ablation_section(tmp_path)
    _ablation_run(tmp_path, "syn200_seed0", 0.55, 0.80)
    assert "1 of 3 runs separate the classes" in report.ablation_section(tmp_path)
