"""The classifier trainer end to end: mixed training set, outputs, evaluate mode, SIGKILL-and-resume
equality, and the bad-input errors."""

import json

import cv2
import main_process
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from main_process import CLASSIFIER, CLASSIFIER_OVERRIDES, CLASSIFIER_STEPS

from configs import classifier_forearm
from xrayjax import build
from xrayjax import logging as runlog
from xrayjax.data import sources, training_set
from xrayjax.trainers import classifier

TOTAL = CLASSIFIER_STEPS


def _run(workdir, data_dir, *overrides):
    return main_process.run(CLASSIFIER, workdir, data_dir, *CLASSIFIER_OVERRIDES, *overrides)


def _config(data_dir, per_class=4, **fields):
    config = classifier_forearm.get_config("data=phantom,runlocal")
    config.data_dir = str(data_dir)
    config.synthetic.per_class = per_class
    for key, value in fields.items():
        target = config
        *parents, leaf = key.split(".")
        for name in parents:
            target = target[name]
        target[leaf] = value
    return config


def test_mixed_training_set_has_the_requested_class_counts(phantom_data_dir):
    natural = sources.labelled_table(
        "phantom_forearm_radiograph:train", str(phantom_data_dir), "natural"
    )[1]
    table, summary = training_set.training_set(_config(phantom_data_dir, per_class=5))
    labels = table.column("label")
    want = [int((natural == c).sum()) + 5 for c in (0, 1)]
    assert [int((labels == c).sum()) for c in (0, 1)] == want
    assert summary["total"] == {"normal": want[0], "abnormal": want[1], "images": sum(want)}
    assert summary["natural"]["normal"] + summary["natural"]["abnormal"] == 24
    # Natural rows first; then 5 + 5 distinct records of the clean (synthetic) dataset.
    names = [table.names[s] for s in table.rows[:, 0]]
    assert names[:24] == ["phantom_forearm_radiograph:train"] * 24
    assert names[24:] == ["phantom_forearm_clean:train"] * 10
    drawn = table.rows[24:, 1]
    assert len(set(drawn.tolist())) == 10
    # Seeded: the same seed draws the same records, another seed others.
    again, _ = training_set.training_set(_config(phantom_data_dir, per_class=5))
    np.testing.assert_array_equal(again.rows[24:, 1], drawn)
    other, _ = training_set.training_set(_config(phantom_data_dir, per_class=5, seed=1))
    assert set(other.rows[24:, 1].tolist()) != set(drawn.tolist())
    none, summary0 = training_set.training_set(_config(phantom_data_dir, per_class=0))
    assert len(none) == 24 and summary0["total"]["images"] == 24
    # CLAHE on natural records only (source 0); synthetic ones take their own transform.
    config = _config(phantom_data_dir)
    natural = build.classifier_preprocess(config, clahe=True, augment=True)
    synthetic = build.classifier_preprocess(config, clahe=False, augment=True)
    mixed = training_set.MixedPreprocess(natural, synthetic)
    for row, want in ((0, natural), (30, synthetic)):
        out = mixed(table[row], np.random.default_rng(row))
        expected = want(table[row], np.random.default_rng(row))
        np.testing.assert_array_equal(out["image"], expected["image"])
        assert out["label"].dtype == np.int32 and out["label"] == labels[row]


def test_run_writes_every_output(classifier_reference):
    workdir, result, _ = classifier_reference
    assert "training set: " in result.stdout and "4 per class synthetic" in result.stdout
    records = main_process.metrics(workdir)
    assert [r["step"] for r in records] == list(range(1, TOTAL + 1))
    epochs = [r for r in records if "epoch" in r]
    assert [(r["step"], r["epoch"]) for r in epochs] == [(4, 1), (8, 2), (12, 3), (16, 4)]
    for r in epochs:
        assert {"train/accuracy", "test/accuracy", "test/sensitivity", "test/specificity",
                "test/roc_auc", "train/loss", "train/lr"} <= set(r)  # fmt: skip
        # 12 test images: accuracy is a multiple of 1/12.
        assert round(r["test/accuracy"] * 12, 6) == round(r["test/accuracy"] * 12)
        # 4 batches of 8 per epoch: the running accuracy is a multiple of 1/32.
        assert (r["train/accuracy"] * 32) == round(r["train/accuracy"] * 32)
    assert records[0]["train/lr"] == pytest.approx(0.01)
    info = json.loads((workdir / "training_set.json").read_text())
    assert info["total"]["images"] == 32 and info["synthetic"]["per_class"] == 4
    assert (info["steps_per_epoch"], info["total_steps"]) == (4, TOTAL)
    report = json.loads((workdir / "eval.json").read_text())
    assert (report["step"], report["total_steps"]) == (TOTAL, TOTAL)
    assert report["split"] == "phantom_forearm_radiograph:test" and report["num_images"] == 12
    assert report["accuracy"] == pytest.approx(epochs[-1]["test/accuracy"])
    assert report["roc_auc"] == pytest.approx(epochs[-1]["test/roc_auc"])
    low, high = report["accuracy_ci"]
    assert low <= report["accuracy"] <= high
    assert np.sum(report["confusion_matrix"]) == 12
    figure = cv2.imread(str(workdir / "convergence.png"))
    assert figure is not None and figure.shape == (400, 640, 3)
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [8, 12, 16]


def test_evaluate_mode_writes_the_same_eval_json(classifier_reference, phantom_data_dir):
    workdir, _, at_end = classifier_reference
    (workdir / "eval.json").unlink()
    # 'test' names a split of the config's test dataset: the default test set again.
    result = _run(workdir, phantom_data_dir, "--mode=evaluate", "--split=test")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "eval.json").read_text() == at_end
    assert "phantom_forearm_radiograph:test at step 16: accuracy" in result.stdout


def test_sigkill_and_rerun_gives_the_same_run(classifier_reference, phantom_data_dir, tmp_path):
    reference, _, at_end = classifier_reference
    workdir = tmp_path / "killed"
    process = main_process.start(CLASSIFIER, workdir, phantom_data_dir, *CLASSIFIER_OVERRIDES)
    main_process.kill_at_checkpoint([process], workdir, 4)
    assert not (workdir / "checkpoints" / str(TOTAL)).exists()
    assert not (workdir / "eval.json").exists()
    resumed = _run(workdir, phantom_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stdout
    assert (workdir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    assert (workdir / "eval.json").read_text() == at_end
    want = main_process.checkpoint_state(reference, TOTAL)
    got = main_process.checkpoint_state(workdir, TOTAL)
    for part in ("params", "batch_stats", "opt_state"):
        w, g = main_process.flat_arrays(want[part]), main_process.flat_arrays(got[part])
        assert w.keys() == g.keys() and len(w) > 5, part
        for key in w:
            np.testing.assert_array_equal(g[key], w[key], err_msg=f"{part}{key}")


def _bars(folder, count, rng):
    """normal/: a bright vertical bar on a noisy background; abnormal/: the bar cut by a gap."""
    for label, name in enumerate(training_set.CLASS_NAMES):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            image = np.full((32, 32), 30.0)
            x = int(rng.integers(10, 22))
            image[4:28, x - 2 : x + 2] = 200
            if label:
                y = int(rng.integers(10, 15))
                image[y : y + 8, x - 2 : x + 2] = 30
            image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / name / f"{i}.png"), image)


def test_learns_what_it_can_see(tmp_path):
    """Each label reaches the loss with its own image: a plainly visible difference is learnt."""
    from data_prep import image_folder

    rng = np.random.default_rng(0)
    for split, count in (("train", 64), ("test", 16)):
        _bars(tmp_path / split, count, rng)
        image_folder.main(
            f"--source {tmp_path / split} --name bars_{split} --split {split} "
            f"--data-dir {tmp_path / 'tfds'} --image-size 32".split()
        )
    config = _config(tmp_path / "tfds", per_class=0, num_epochs=10, steps_per_epoch=0)
    config.natural.train, config.natural.test = "bars_train:train", "bars_test:test"
    classifier.train(config, tmp_path / "run")
    epochs = [r for r in main_process.metrics(tmp_path / "run") if "epoch" in r]
    # Shuffled or misaligned labels would leave both near chance (0.5).
    assert len(epochs) == 10
    assert epochs[-1]["train/accuracy"] > 0.85
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["num_images"] == 32 and report["roc_auc"] > 0.9


def _unlabelled_dataset(data_dir, tmp_path):
    """An image_folder dataset without class folders: every label is -1."""
    from data_prep import image_folder

    name = "unlabelled_renders"
    if not (data_dir / name).exists():
        source = tmp_path / "renders"
        source.mkdir()
        for i in range(3):
            cv2.imwrite(str(source / f"r{i}.png"), np.full((64, 64), 40 * i, np.uint8))
        image_folder.main(
            [
                "--source",
                str(source),
                "--name",
                name,
                "--data-dir",
                str(data_dir),
                "--image-size",
                "64",
            ]  # fmt: skip
        )
    return f"{name}:train"


def test_bad_input_is_refused_before_training(phantom_data_dir, tmp_path, capsys):
    # Asking for more synthetic images than exist says how many there are, per dataset.
    clean = sources.labelled_table("phantom_forearm_clean:train", str(phantom_data_dir), "")[1]
    normal = int((clean == 0).sum())
    with pytest.raises(
        ValueError,
        match=rf"only {normal} normal \(label 0\) synthetic images exist "
        rf"\(phantom_forearm_clean:train: {normal}\)",
    ):
        training_set.training_set(_config(phantom_data_dir, per_class=100))
    unlabelled = _unlabelled_dataset(phantom_data_dir, tmp_path)
    with pytest.raises(
        ValueError, match="synthetic dataset unlabelled_renders:train has no labels"
    ):
        training_set.training_set(
            _config(phantom_data_dir, **{"synthetic.datasets": (unlabelled,)})
        )
    # Test data from a synthetic dataset (here another split of one) is refused.
    config = _config(phantom_data_dir, **{"natural.test": "phantom_forearm_clean:test"})
    with pytest.raises(ValueError, match="comes from a synthetic dataset"):
        training_set.eval_table(config)
    # Wrists are never abnormal: a class is missing from the training set.
    config = _config(
        phantom_data_dir, per_class=0, **{"natural.train": "phantom_wrist_clean:train"}
    )
    with pytest.raises(ValueError, match="the training set has no abnormal images"):
        training_set.training_set(config)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        classifier.evaluate(_config(phantom_data_dir), tmp_path / "never_trained")
    assert not (tmp_path / "never_trained").exists()
    # What the command line ends with (main.run trains inside runlog.run_cli): exit status 2,
    # one line, nothing written.
    config = _config(phantom_data_dir, per_class=500)
    capsys.readouterr()  # drop the progress bars of the dataset built above
    with pytest.raises(SystemExit) as exited:
        runlog.run_cli(lambda: classifier.train(config, tmp_path / "w1"), quiet_libraries=False)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert (
        err.startswith("error: config.synthetic.per_class=500, but only") and err.count("\n") == 1
    )
    assert not (tmp_path / "w1").exists()


def _strict_json(text: str):
    """json.loads refusing NaN and ±Infinity, which Python writes by default but JSON lacks."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_undefined_values_are_written_as_null(phantom_data_dir, tmp_path):
    """Wrists are never abnormal, so on their test set ROC AUC is undefined: every JSON file of
    the run parses strictly, with null where a value is undefined."""
    config = _config(
        phantom_data_dir,
        per_class=0,
        total_steps=2,
        bootstrap_resamples=10,
        **{"natural.test": "phantom_wrist_radiograph:test"},
    )
    workdir = tmp_path / "run"
    classifier.train(config, workdir)
    files = [p for p in workdir.rglob("*") if p.suffix in (".json", ".jsonl")]
    names = {p.name for p in files}
    assert {"config.json", "training_set.json", "eval.json", "metrics.jsonl"} <= names, names
    for path in files:
        text = path.read_text()
        for record in text.splitlines() if path.suffix == ".jsonl" else [text]:
            _strict_json(record)
    report = _strict_json((workdir / "eval.json").read_text())
    assert report["roc_auc"] is None and report["accuracy"] is not None
    last = _strict_json((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert "test/roc_auc" in last and last["test/roc_auc"] is None
    # A NaN setting in config.json is null too.
    build.write_config(ml_collections.ConfigDict({"lr": float("nan")}), tmp_path)
    assert _strict_json((tmp_path / "config.json").read_text()) == {"lr": None}


def test_evaluate_reports_study_level_metrics_and_other_splits(
    classifier_reference, phantom_data_dir
):
    """A test set with study ids (MURA-like) gets study accuracy and kappa; the file is named
    after the split when it is not the config's test split."""
    from data_prep import builder

    workdir, _, _ = classifier_reference
    name = "phantom_studies"
    if not (phantom_data_dir / name).exists():
        radiographs = sources.labelled_table(
            "phantom_forearm_radiograph:test", str(phantom_data_dir), "test"
        )[0]

        def generate(recorder):
            for i in range(len(radiographs)):
                record = radiographs[i]
                recorder.seen += 1
                # Two images per study, studies never mixing labels.
                yield (
                    f"{i:03d}",
                    {
                        "image": record["image"],
                        "label": int(record["label"]),
                        "study_id": f"label{int(record['label'])}/study{i // 2}",
                    },
                )

        builder.build_dataset(
            name,
            {
                "image": builder.image_feature(64),
                "label": tfds.features.ClassLabel(names=["normal", "abnormal"]),
                "study_id": tfds.features.Text(),
            },
            {"test": generate},
            phantom_data_dir,
            source="test",
            description="phantom radiographs grouped into studies",
        )
    report = classifier.evaluate(_config(phantom_data_dir), workdir, split=f"{name}:test")
    written = json.loads((workdir / f"eval_{name}_test.json").read_text())
    assert json.dumps(written) == json.dumps(report)
    assert report["num_images"] == 12 and 6 <= report["num_studies"] <= 12
    assert {"study_accuracy", "study_kappa", "study_accuracy_ci", "study_kappa_ci"} <= set(report)
    # Same images as the default test set, so the image-level numbers agree.
    default = json.loads((workdir / "eval.json").read_text())
    assert report["accuracy"] == default["accuracy"]
    assert report["confusion_matrix"] == default["confusion_matrix"]


def test_nan_stops_the_run_before_any_checkpoint(phantom_data_dir, tmp_path):
    workdir = tmp_path / "nan"
    # A huge learning rate: step 1's update overflows the parameters.
    result = _run(workdir, phantom_data_dir, "--config.optim.lr=1e38")
    assert result.returncode == 3
    assert "step 2: non-finite" in result.stderr and "train/loss=" in result.stderr
    assert not list((workdir / "checkpoints").iterdir())
    assert [r["step"] for r in main_process.metrics(workdir)] == [1]  # the one finite step
