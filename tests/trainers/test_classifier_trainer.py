"""The classifier trainer end to end: mixed training set, outputs, evaluate mode, SIGKILL-and-resume
equality, and the bad-input errors."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from configs import classifier_forearm
from xrayjax.trainers import classifier

CONFIG = "configs/classifier_forearm.py:data=phantom,runlocal"
# 24 natural + 2·4 synthetic images, batch 8: 4 steps per epoch (runlocal), 4 epochs.
OVERRIDES = ("--config.synthetic.per_class=4", "--config.num_epochs=4")
TOTAL = 16
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(workdir, data_dir, *extra):
    return [
        sys.executable,
        "-m",
        "xrayjax.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        *OVERRIDES,
        *extra,
    ]


def _run(*args):
    return subprocess.run(_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=600)


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


def _final_state(workdir, step=TOTAL):
    with ocp.CheckpointManager(workdir / "checkpoints") as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]


def _flat(tree):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        yield jax.tree_util.keystr(path), np.asarray(leaf)


@pytest.fixture(scope="module")
def uninterrupted(phantom_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = _run(workdir, phantom_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result, (workdir / "eval.json").read_text()


def test_mixed_training_set_has_the_requested_class_counts(phantom_data_dir):
    natural = classifier.labelled_table(
        "phantom_forearm_radiograph:train", str(phantom_data_dir), "natural"
    )[1]
    table, summary = classifier.training_set(_config(phantom_data_dir, per_class=5))
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
    again, _ = classifier.training_set(_config(phantom_data_dir, per_class=5))
    np.testing.assert_array_equal(again.rows[24:, 1], drawn)
    other, _ = classifier.training_set(_config(phantom_data_dir, per_class=5, seed=1))
    assert set(other.rows[24:, 1].tolist()) != set(drawn.tolist())
    none, summary0 = classifier.training_set(_config(phantom_data_dir, per_class=0))
    assert len(none) == 24 and summary0["total"]["images"] == 24
    # CLAHE on natural records only (source 0); synthetic ones take their own transform.
    config = _config(phantom_data_dir)
    natural = classifier.preprocess(config, clahe=True, augment=True)
    synthetic = classifier.preprocess(config, clahe=False, augment=True)
    mixed = classifier.MixedPreprocess(natural, synthetic)
    for row, want in ((0, natural), (30, synthetic)):
        out = mixed(table[row], np.random.default_rng(row))
        expected = want(table[row], np.random.default_rng(row))
        np.testing.assert_array_equal(out["image"], expected["image"])
        assert out["label"].dtype == np.int32 and out["label"] == labels[row]


def test_run_writes_every_output(uninterrupted):
    workdir, result, _ = uninterrupted
    assert "training set: " in result.stdout and "4 per class synthetic" in result.stdout
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, TOTAL + 1, 2))
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


def test_evaluate_mode_writes_the_same_eval_json(uninterrupted, phantom_data_dir):
    workdir, _, at_end = uninterrupted
    (workdir / "eval.json").unlink()
    # 'test' names a split of the config's test dataset: the default test set again.
    result = _run(workdir, phantom_data_dir, "--mode=evaluate", "--split=test")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "eval.json").read_text() == at_end
    assert "phantom_forearm_radiograph:test at step 16: accuracy" in result.stdout


def test_sigkill_and_rerun_gives_the_same_run(uninterrupted, phantom_data_dir, tmp_path):
    reference, _, at_end = uninterrupted
    workdir = tmp_path / "killed"
    process = subprocess.Popen(
        _command(workdir, phantom_data_dir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not (workdir / "checkpoints" / "4").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "checkpoints" / str(TOTAL)).exists()
    assert not (workdir / "eval.json").exists()
    resumed = _run(workdir, phantom_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stdout
    assert (workdir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    assert (workdir / "eval.json").read_text() == at_end
    want, got = _final_state(reference), _final_state(workdir)
    for part in ("params", "batch_stats", "opt_state"):
        w, g = dict(_flat(want[part])), dict(_flat(got[part]))
        assert w.keys() == g.keys() and len(w) > 5, part
        for key in w:
            np.testing.assert_array_equal(g[key], w[key], err_msg=f"{part}{key}")


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


def test_bad_input_is_refused_before_training(phantom_data_dir, tmp_path):
    # Asking for more synthetic images than exist says how many there are, per dataset.
    clean = classifier.labelled_table("phantom_forearm_clean:train", str(phantom_data_dir), "")[1]
    normal = int((clean == 0).sum())
    with pytest.raises(
        ValueError,
        match=rf"only {normal} normal \(label 0\) synthetic images exist "
        rf"\(phantom_forearm_clean:train: {normal}\)",
    ):
        classifier.training_set(_config(phantom_data_dir, per_class=100))
    unlabelled = _unlabelled_dataset(phantom_data_dir, tmp_path)
    with pytest.raises(
        ValueError, match="synthetic dataset unlabelled_renders:train has no labels"
    ):
        classifier.training_set(_config(phantom_data_dir, **{"synthetic.datasets": (unlabelled,)}))
    # Test data from a synthetic dataset (here another split of one) is refused.
    config = _config(phantom_data_dir, **{"natural.test": "phantom_forearm_clean:test"})
    with pytest.raises(ValueError, match="comes from a synthetic dataset"):
        classifier.eval_table(config)
    # Wrists are never abnormal: a class is missing from the training set.
    config = _config(
        phantom_data_dir, per_class=0, **{"natural.train": "phantom_wrist_clean:train"}
    )
    with pytest.raises(ValueError, match="the training set has no abnormal images"):
        classifier.training_set(config)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        classifier.evaluate(_config(phantom_data_dir), tmp_path / "never_trained")
    assert not (tmp_path / "never_trained").exists()
    # Through the command line: exit status 2, one line, nothing written.
    result = _run(tmp_path / "w1", phantom_data_dir, "--config.synthetic.per_class=500")
    assert result.returncode == 2
    assert "error: config.synthetic.per_class=500, but only" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w1").exists()


def test_evaluate_reports_study_level_metrics_and_other_splits(uninterrupted, phantom_data_dir):
    """A test set with study ids (MURA-like) gets study accuracy and kappa; the file is named
    after the split when it is not the config's test split."""
    from data_prep import builder

    workdir, _, _ = uninterrupted
    name = "phantom_studies"
    if not (phantom_data_dir / name).exists():
        radiographs = classifier.labelled_table(
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
    result = _run(workdir, phantom_data_dir, "--config.optim.lr=nan")
    assert result.returncode == 3
    # Step 1 starts from finite parameters; its NaN update shows in step 2's loss.
    assert "step 2: non-finite" in result.stderr and "train/loss=nan" in result.stderr
    assert not list((workdir / "checkpoints").iterdir())
    metrics = workdir / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text()
