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


def test_report_has_every_section_before_anything_has_run(tmp_path):
    text = report.write_demo_report(tmp_path).read_text()
    for heading in (
        "## Targets",
        "## The phantom world",
        "## Classifier ablation",
        "## Translation",
        "## Segmentation",
        "## Radial inclination on 256×256",
        "## Time per stage",
    ):
        assert heading in text, heading
    assert "The ablation has not run yet." in text and "Nothing measured yet." in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ablation"] is None and summary["translation"] == []
    assert not list(tmp_path.glob("*.tmp"))


def test_a_workdir_keeps_its_preset_and_seed(tmp_path, capsys):
    demo.start(tmp_path, "demo", 1)
    assert json.loads((tmp_path / "run.json").read_text()) == {"preset": "demo", "seed": 1}
    demo.start(tmp_path, "demo", 1)  # the same again: fine
    with pytest.raises(ValueError, match="--seed 1; use another --workdir"):
        demo.start(tmp_path, "demo", 2)
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--workdir", str(tmp_path), "--preset", "study", "--seed", "1"])
    assert exit_info.value.code == 2 and "--preset demo --seed 1" in capsys.readouterr().err


def test_configure_refuses_a_misspelt_field():
    config = demo.configure("classifier_forearm", "data=phantom", {"model.width": 16})
    assert config.model.width == 16
    with pytest.raises(KeyError, match='Did you mean "width"'):
        demo.configure("classifier_forearm", "data=phantom", {"model.widht": 16})
    with pytest.raises(KeyError):
        demo.configure("classifier_forearm", "data=phantom", {"modle.width": 16})


def test_every_seed_gets_its_own_world_and_stage_seeds(tmp_path):
    from data_prep import phantom

    seeds = {s: {spec.seed for spec in phantom.demo_preset(s)} for s in (0, 1, 2)}
    assert not seeds[0] & seeds[1] and not seeds[1] & seeds[2]
    for s in (0, 1):
        demo.start(tmp_path / str(s), "demo", s)
    configs = [demo._cyclegan_config(tmp_path / str(s), "normal") for s in (0, 1)]
    assert configs[0].seed != configs[1].seed
    assert demo._cyclegan_config(tmp_path / "0", "abnormal").seed != configs[0].seed
