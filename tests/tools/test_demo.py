"""The demo orchestrator (stages skipped when done, times kept across an interruption, stage
names checked) and its report (every section, whatever has run; the chance reading)."""

import json
import pathlib

import pytest

from xrayjax.tools import demo, report


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
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--workdir", "gs://bucket/demo"])
    assert exit_info.value.code == 2 and "runs on a local folder" in capsys.readouterr().err
    assert not pathlib.Path("gs:").exists()


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


def test_demo_gans_keep_the_thesis_schedule_scaled_to_their_runs():
    """30 epochs, the rate constant for 10 then falling to 0 at the last step (thesis 4.1)."""
    from xrayjax import build

    config = demo.configure("cyclegan_forearm", "data=phantom", demo.DEMO.gan)
    total, per_epoch = config.total_steps, config.steps_per_epoch
    assert total == 30 * per_epoch and 1900 <= total <= 2000
    engine = build.gan_engine(config, per_epoch, total)
    lr = config.optim.gen.lr
    assert engine.gen_schedule(10 * per_epoch - 1) == pytest.approx(lr)
    assert engine.gen_schedule(20 * per_epoch) == pytest.approx(lr / 2, rel=0.01)
    assert engine.gen_schedule(total - 1) == 0.0
    assert config.checkpoint_every * 2 == total  # a checkpoint halfway, one at the end
    with pytest.raises(ValueError, match="cannot hold 30 epochs"):
        demo.thesis_schedule(demo.DEMO.gan, 29)


def test_demo_gans_and_segmenter_train_at_the_scale_they_are_evaluated(tmp_path):
    """The demo's GANs and the segmenter train on whole images (flips only); the study's GANs
    keep the 9/8-enlarged crops they ran with."""
    import configs.segmenter_forearm

    for variant in ("", "runlocal"):
        config = configs.segmenter_forearm.get_config(variant)
        assert config.load_size == config.image_size
    for preset, zoomed in (("demo", False), ("study", True)):
        workdir = tmp_path / preset
        demo.start(workdir, preset, 0)
        gans = [demo._cyclegan_config(workdir, "both")]
        gans += [demo._gan_config(workdir, module) for _, module in demo._multi_runs(workdir)]
        for config in gans:
            size = config.image_size
            assert config.load_size == (size + size // 8 if zoomed else size)


def test_every_seed_gets_its_own_world_and_stage_seeds(tmp_path):
    from data_prep import phantom

    seeds = {s: {spec.seed for spec in phantom.demo_preset(s)} for s in (0, 1, 2)}
    assert not seeds[0] & seeds[1] and not seeds[1] & seeds[2]
    for s in (0, 1):
        demo.start(tmp_path / str(s), "demo", s)
    configs = [demo._cyclegan_config(tmp_path / str(s), "both") for s in (0, 1)]
    assert configs[0].seed != configs[1].seed
    # The thesis's per-class pair shares one seed (the same start), apart from the shared GAN.
    pair = [demo._cyclegan_config(tmp_path / "0", c) for c in ("normal", "abnormal")]
    assert pair[0].seed == pair[1].seed != configs[0].seed
    assert pair[0].domains.A.labels == (0,) and configs[0].domains.A.labels == ()


def test_background_stage_runs_beside_the_next_ones_and_is_waited_for(tmp_path, monkeypatch):
    import subprocess
    import sys

    log = []
    launched = []

    def launch(workdir, stage, preset, seed, code="pathlib.Path(sys.argv[1]).write_text('ok')"):
        path = workdir / "logs" / f"{stage.name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the stage's output\n")
        script = f"import pathlib, sys, time; time.sleep(1); {code}"
        process = subprocess.Popen([sys.executable, "-c", script, str(workdir / "bg.done")])
        launched.append(process)
        return process, path

    def needs_bg(workdir):
        log.append(("c", (workdir / "bg.done").exists()))
        (workdir / "c.done").write_text("ok")

    background = demo.Stage(
        "bg", "in another process", None, lambda w: (w / "bg.done").exists(), background=True
    )
    waiting = demo.Stage(
        "c", "needs bg", needs_bg, lambda w: (w / "c.done").exists(), needs=("bg",)
    )
    monkeypatch.setattr(demo, "STAGES", (_stage("a", log), background, waiting))
    monkeypatch.setattr(demo, "_launch", launch)
    demo.run(tmp_path)
    assert log == ["a", ("c", True)]  # a ran while bg slept; c only once bg had finished
    assert launched[0].returncode == 0

    # A background stage that fails stops the run at the stage that needs it, naming its log.
    for name in ("a.done", "bg.done", "c.done"):
        (tmp_path / name).unlink()
    monkeypatch.setattr(demo, "_launch", lambda *a: launch(*a, code="sys.exit(3)"))
    with pytest.raises(RuntimeError, match=r"stage bg failed \(exit 3\); see .*bg.log"):
        demo.run(tmp_path)
    assert not (tmp_path / "c.done").exists()

    # An error in the foreground stops what runs in the background.
    (tmp_path / "a.done").unlink()
    broken = _stage("a", log, fail=True)
    monkeypatch.setattr(demo, "STAGES", (background, broken))
    monkeypatch.setattr(demo, "_launch", lambda *a: launch(*a, code="time.sleep(60)"))
    with pytest.raises(RuntimeError, match="a broke"):
        demo.run(tmp_path)
    assert launched[-1].poll() is not None  # terminated, not left running


def test_each_preset_has_its_arms_and_gans_and_a_phantom_world(tmp_path):
    from data_prep import phantom

    kinds = {name: [arm.kind for arm in demo.ablation_arms(s)] for name, s in demo.PRESETS.items()}
    assert kinds["demo"] == ["natural", "translated", "translated", "untranslated"]
    assert kinds["study"] == [*kinds["demo"], "ceiling"]
    assert kinds["perclass"] == [*kinds["demo"], "translated_per_class"]
    for name in ("demo", "perclass"):
        demo.start(tmp_path / name, name, 0)
    assert demo._cyclegan_classes(tmp_path / "demo") == ("both",)
    assert demo._cyclegan_classes(tmp_path / "perclass") == ("both", "normal", "abnormal")
    assert set(demo.PRESETS) <= set(phantom.PRESETS)  # every preset renders its own world
    study = {spec.body_part for spec in phantom.PRESETS["study"](0)}
    assert study == set(demo.STUDY.body_parts)  # each multi-cycleGAN has its phantoms


def _documented_keys() -> dict[str, list[str]]:
    """The README's summary.json table: key path → the identifiers its row names in backticks."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    table = text.split("### summary.json", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = line.split(" | ")
        if not line.startswith("| `") or len(cells) < 2:
            continue
        words = re.findall(r"`([a-z0-9_]+)`", cells[1])
        for path in re.findall(r"`([a-z0-9_.\[\]]+)`", cells[0]):
            rows[path] = words
    return rows


def _resolve(summary: dict, path: str):
    node = summary
    for part in path.split("."):
        node = node[part.removesuffix("[]")]
        if part.endswith("[]"):
            assert isinstance(node, list) and node, path
            node = node[0]
    return node


def test_summary_of_a_real_demo_run_has_every_documented_key(tmp_path):
    """A real demo run's outputs (seed 1, per-image lists cut to 16) make a summary.json with
    every key the README documents and every key the report's tables read."""
    import pathlib
    import shutil

    shutil.copytree(pathlib.Path(__file__).parents[1] / "fixtures" / "demo_run", tmp_path / "run")
    text = report.write_demo_report(tmp_path / "run").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    documented = _documented_keys()
    assert {"seed", "preset", "ablation.arms[]", "translation[]", "inclination"} <= set(documented)
    for path, words in documented.items():
        if path == "other_body_parts.wrist":  # the study's alone
            assert summary["other_body_parts"] is None or "wrist" in summary["other_body_parts"]
            continue
        node = _resolve(summary, path)
        if path in ("translation[]", "inclination", "segmenter", "targets[]"):
            missing = [w for w in words if w not in node]
            assert not missing, (path, missing)
    assert (summary["seed"], summary["preset"]) == (1, "demo")
    arms = {arm["name"]: arm for arm in summary["ablation"]["arms"]}
    assert set(arms) == {"natural", "translated300", "translated600", "untranslated300"}
    assert arms["natural"]["diff_vs_natural"] is None
    for arm in arms.values():
        for key in ("kind", "synthetic_per_class", "runs", "roc_auc_mean", "roc_auc_std"):
            assert key in arm, key
        run = arm["runs"][0]
        assert {"seed", "roc_auc", "roc_auc_ci", "accuracy"} <= set(run)
        assert run["roc_auc_ci"][0] <= run["roc_auc"] <= run["roc_auc_ci"][1]
        if arm["name"] != "natural":
            assert set(arm["diff_vs_natural"]) >= {"roc_auc", "ci"}
    for key in ("eq66", "eq67", "baseline"):
        assert 0 <= summary["segmentation"][key]["dice"] <= 1
    assert summary["inclination"]["source"] == "predicted masks"
    assert summary["translation"][0]["label_auc"] is not None
    assert set(summary["stage_seconds"]) >= {"prepare", "ablation", "evaluate"}
    assert "| both | G_AB (B → A) |" in text and "nan" not in text.lower().split()
