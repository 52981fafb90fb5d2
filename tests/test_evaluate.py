"""`--mode evaluate` on a GAN workdir: eval.json's sections, its numbers and the figures.

The session's tiny multi-cycleGAN (2 steps, conftest) is evaluated once per module; its numbers
are noise, so the tests check ranges, counts and the skip reasons, not quality.
"""

import copy
import json
import math
import os

import cv2
import main_process
import numpy as np
import pytest

from configs import multicyclegan_forearm
from xrayjax import evaluate
from xrayjax import logging as runlog
from xrayjax.evaluators import geometry

PAIRS = {"AB", "AC", "BA", "BC", "CA", "CB"}
NUM_A = 12  # phantom_forearm_radiograph test split in the fixture


@pytest.fixture(scope="module")
def trained(tiny_gan):
    config, workdir, _ = tiny_gan("multicyclegan_forearm")
    return config, workdir


@pytest.fixture(scope="module")
def evaluated(trained):
    config, workdir = trained
    report = evaluate.evaluate(config, workdir)
    return report, (workdir / "eval.json").read_text(), workdir


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_eval_json_holds_every_section(evaluated):
    report, text, _ = evaluated
    assert json.loads(text) == report  # strict JSON: NaN/inf would not parse back equal
    assert report["step"] == 2
    assert {"domains", "features", "translation", "segmentation", "radial_inclination"} <= set(
        report
    )
    assert report["domains"]["A"]["dataset"] == "phantom_forearm_radiograph:test"
    assert report["domains"]["A"]["num_images"] == NUM_A
    assert report["domains"]["C"]["image_key"] == "mask"
    assert set(report["translation"]) == PAIRS
    for pair, section in report["translation"].items():
        assert section["generator"] == f"G_{pair}"
        cycle = section["cycle"]
        assert _finite(cycle["l1_mean"]) and 0 <= cycle["l1_mean"] <= 2
        assert _finite(cycle["ssim_mean"]) and -1 <= cycle["ssim_mean"] <= 1
        assert len(cycle["l1"]) == section["num_images"]
        anatomy = section["anatomy_preservation"]
        assert 0 <= anatomy["translated"]["dice_mean"] <= 1
        assert anatomy["translated"]["num_images"] == section["num_images"]
        # The bone finder's reference: itself on real target images against their masks.
        assert 0 <= anatomy["reference"]["dice_mean"] <= 1
        target = pair[0]
        assert anatomy["reference"]["num_images"] == report["domains"][target]["num_masks"]
        expected = "mask above 0.0" if target == "C" else "per-image Otsu threshold"
        assert anatomy["bone"] == expected
    # Real masks thresholded are the masks: the mask domain's reference is exact.
    assert report["translation"]["CA"]["anatomy_preservation"]["reference"][
        "dice_mean"
    ] == pytest.approx(1.0)
    assert "segmenter_workdir is empty" in report["segmenter"]["skipped"]


def test_without_classifier_kid_and_labels_are_skipped_with_a_reason(evaluated):
    report, _, _ = evaluated
    assert set(report["features"]) == {"A", "B"}  # C holds masks: no classifier applies
    assert all("classifier_workdir" in f["skipped"] for f in report["features"].values())
    for pair, section in report["translation"].items():
        words = "bone masks" if pair[0] == "C" else "classifier_workdir"
        assert words in section["kid"]["skipped"]
        assert words in section["label_preservation"]["skipped"]


def test_segmentation_by_both_equations_and_the_baseline(evaluated):
    seg = evaluated[0]["segmentation"]
    assert seg["equations"] == {"eq66": "G_CB(G_BA(a))", "eq67": "G_CB(a)"}
    assert set(seg["methods"]) == {"eq66", "eq67", "baseline"}  # no segmenter configured
    for eq in ("eq66", "eq67", "baseline"):
        assert seg[eq]["num_images"] == NUM_A and len(seg[eq]["dice"]) == NUM_A
        assert 0 <= seg[eq]["dice_mean"] <= 1 and 0 <= seg[eq]["iou_mean"] <= 1
        assert all(0 <= d <= 1 for d in seg[eq]["dice"])
        assert 0 <= seg["bone_fraction_mean"][eq] <= 1


def test_radial_inclination_counts_every_mask(evaluated):
    # At 64 px most phantom radii are too small to measure (geometry works at 256 px: at 64 px
    # only ~7 of 24 ground-truth masks measure, with errors of several degrees), so this checks
    # the accounting: every image is measured or fails with a reason.
    incl = evaluated[0]["radial_inclination"]
    assert incl["median_filter_px"] == 3 and "radial_inclination_deg" in incl["truth"]
    assert incl["image_px"] == 64 and incl["measured_at_px"] == 256  # upsampled below 128 px
    for key in ("ground_truth_masks", "eq66", "eq67"):
        result = incl[key]
        assert result["num_measured"] + result["num_failures"] == NUM_A
        assert all(f["reason"] for f in result["failures"])
        assert all(_finite(e) for e in result["errors_deg"])
        assert _finite(result["mae_deg"]) == (result["num_measured"] > 0)


def test_figures_are_pngs(evaluated):
    report, _, workdir = evaluated
    names = {os.path.basename(p) for p in report["figures"]}
    assert {f"translation_{p}.png" for p in PAIRS} <= names
    assert {"segmentation_eq66.png", "segmentation_eq67.png", "segmentation_baseline.png"} <= names
    assert "radial_inclination_errors_ground_truth_masks.png" in names
    for path in report["figures"]:
        image = cv2.imread(str(workdir / path))
        assert image is not None and image.ndim == 3


def test_with_a_trained_classifier_kid_and_label_preservation(trained, classifier_reference):
    config, workdir = trained
    # The session's runlocal classifier (trained once, for the resume and multi-host tests too).
    classifier_workdir, _, _ = classifier_reference
    config = copy.deepcopy(config)
    config.eval.classifier_workdir = str(classifier_workdir)
    config.eval.max_images = 8
    report = evaluate.evaluate(config, workdir)
    features = report["features"]["A"]
    assert report["features"]["B"] == features  # one default classifier for both X-ray domains
    assert "penultimate" in features["network"]
    assert features["classifier_step"] == main_process.CLASSIFIER_STEPS
    assert features["input_size"] == 32 and features["feature_dim"] == 8  # width 4, 2 modules
    for pair, section in report["translation"].items():
        kid = section["kid"]
        labels = section["label_preservation"]
        if pair[0] == "C":  # a mask target: no X-ray for the classifier
            assert "masks" in kid["skipped"] and "masks" in labels["skipped"]
            continue
        for key in ("translated", "untranslated_source", "reference_real"):
            assert _finite(kid[key]["mean"]) and _finite(kid[key]["std"])
        assert kid["subset_size"] == 8 and kid["reference_real"]["num_each"] == 4
        assert 0 <= labels["translated"]["accuracy"] <= 1
        assert labels["translated"]["num_images"] == 8
        # The reference: the same classifier on the real, labelled target images.
        assert labels["reference"]["num_images"] == 8
    assert report["segmentation"]["eq66"]["num_images"] == 8


def test_cli_without_checkpoint_says_so(tmp_path, capsys):
    """What `--mode evaluate` on an untrained workdir ends with: one line, exit 2, nothing
    written (main.run calls evaluate.evaluate inside runlog.run_cli)."""
    config = multicyclegan_forearm.get_config("data=phantom,runlocal")
    with pytest.raises(SystemExit) as exited:
        runlog.run_cli(lambda: evaluate.evaluate(config, tmp_path / "empty"), quiet_libraries=False)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "no checkpoint in" in err and "train this config" in err and err.count("\n") == 1
    assert not (tmp_path / "empty").exists()  # nothing written


def test_radial_inclination_section_at_256_px():
    """The section's plumbing on masks geometry can measure: exact masks, filtered copies of
    them (eq. 66 here) and empty ones (eq. 67). Geometry's own accuracy has its own tests."""
    from data_prep import render

    phantoms = [render.render_phantom("forearm", "clean", 0, i, 256) for i in range(6)]
    masks = [p.mask.astype(np.uint8) for p in phantoms]
    angles = np.array([p.radial_inclination_deg for p in phantoms])
    domain = evaluate._Domain("A", None, "toy:test", None, None, masks, angles)
    acc = {"index": list(range(6)), "eq66": masks, "eq67": [np.zeros_like(m) for m in masks]}
    assert evaluate.measurable(masks[0], 0.5).shape == (256, 256)  # measured as they are
    section = evaluate._radial_inclination(domain, acc)
    assert section["ground_truth_masks"] == geometry.inclination_errors(masks, angles)
    truth, filtered = section["ground_truth_masks"], section["eq66"]
    assert truth["num_measured"] >= 5 and filtered["indices"] == truth["indices"]
    # The 3×3 median filter moves the measurement a little, not much.
    shift = np.abs(np.subtract(filtered["measured_deg"], truth["measured_deg"]))
    assert 0 < shift.max() and np.median(shift) < 1.0
    assert section["eq67"]["num_failures"] == 6
    assert all("empty" in f["reason"] for f in section["eq67"]["failures"])
    # Without a true angle, the ground-truth mask's own measurement is the reference.
    domain.inclination = None
    section = evaluate._radial_inclination(domain, acc)
    assert "measured on the ground-truth masks" in section["truth"]
    assert "ground_truth_masks" not in section
    assert section["num_images"] == truth["num_measured"]
    assert np.median(np.abs(section["eq66"]["errors_deg"])) < 1.0


def test_json_safe_turns_non_finite_into_null(tmp_path):
    value = {"a": float("nan"), "b": np.float32(1.5), "c": [np.inf, np.int64(3)], "d": (True,)}
    assert runlog.json_safe(value) == {"a": None, "b": 1.5, "c": [None, 3], "d": [True]}
    path = runlog.write_json(tmp_path / "x.json", value)
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [None, 3], "d": [True]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_small_masks_are_measured_upsampled():
    """Below 128 px the soft output is upsampled before thresholding: the distal radius of a
    64-px phantom becomes measurable, the error bounded by the coarse input."""
    from data_prep import render

    errors = []
    for index in range(6):
        p = render.render_phantom("forearm", "clean", 5, index, 64)
        mask = evaluate.measurable(p.mask, 0.5)
        assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 1}
        errors.append(geometry.radial_inclination_deg(mask) - p.radial_inclination_deg)
    assert np.median(np.abs(errors)) < 6.0
