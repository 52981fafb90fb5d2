"""Classification metrics against hand-computed tables, MURA study aggregation, bootstrap."""

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest

from xrayjax.evaluators import classification as cls


def from_table(tn: int, fp: int, fn: int, tp: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions realising the confusion table, in shuffled order."""
    labels = np.array([0] * (tn + fp) + [1] * (fn + tp))
    predictions = np.array([0] * tn + [1] * fp + [0] * fn + [1] * tp)
    order = np.random.default_rng(0).permutation(labels.size)
    return labels[order], predictions[order]


def test_metrics_from_a_hand_table():
    labels, predictions = from_table(tn=40, fp=10, fn=15, tp=35)
    np.testing.assert_array_equal(cls.confusion_matrix(labels, predictions), [[40, 10], [15, 35]])
    assert cls.sensitivity(labels, predictions) == pytest.approx(35 / 50)
    assert cls.specificity(labels, predictions) == pytest.approx(40 / 50)
    assert cls.accuracy(labels, predictions) == pytest.approx(75 / 100)


def test_confusion_matrix_orientation():
    # One example per cell, label 1 = abnormal = positive.
    matrix = cls.confusion_matrix([0, 0, 1, 1], [0, 1, 0, 1])
    np.testing.assert_array_equal(matrix, [[1, 1], [1, 1]])
    (tn, fp), (fn, tp) = cls.confusion_matrix([0, 1, 1, 1], [1, 1, 1, 0])
    assert (tn, fp, fn, tp) == (0, 1, 1, 2)


def test_no_abnormal_labels_gives_nan_sensitivity():
    labels, predictions = from_table(tn=7, fp=3, fn=0, tp=0)
    assert math.isnan(cls.sensitivity(labels, predictions))
    assert cls.specificity(labels, predictions) == pytest.approx(0.7)
    assert cls.accuracy(labels, predictions) == pytest.approx(0.7)
    assert math.isnan(cls.roc_auc(labels, np.linspace(0, 1, 10)))
    labels, predictions = from_table(tn=0, fp=0, fn=2, tp=6)
    assert math.isnan(cls.specificity(labels, predictions))
    assert cls.sensitivity(labels, predictions) == pytest.approx(0.75)
    assert math.isnan(cls.accuracy([], []))


def test_rejects_non_binary_and_mismatched_inputs():
    with pytest.raises(ValueError, match="only 0"):
        cls.confusion_matrix([0, 2], [0, 1])
    with pytest.raises(ValueError, match="labels but"):
        cls.confusion_matrix([0, 1, 1], [0, 1])


def brute_force_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Fraction of (abnormal, normal) pairs ranked correctly, ties ½: the definition."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_hand_examples():
    # scikit-learn's documented example: 3 of 4 pairs ordered correctly.
    assert cls.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # With ties: abnormal {0.35, 0.8, 0.8} vs normal {0.1, 0.4, 0.8}. 0.35 beats 0.1 only (1);
    # each 0.8 beats 0.1 and 0.4 and ties the normal 0.8 (2.5 each) → 6 of 9 pairs.
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.8, 0.8]
    assert cls.roc_auc(labels, scores) == pytest.approx(6 / 9)
    assert cls.roc_auc([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)
    assert cls.roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert cls.roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0


def test_roc_auc_matches_pairwise_definition_with_many_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = rng.integers(0, 5, 60) / 4.0  # five distinct values: plenty of ties
    assert cls.roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores))


def kappa_by_definition(table: np.ndarray) -> float:
    """(p_o − p_e) / (1 − p_e) written out cell by cell from a 2×2 table."""
    n = table.sum()
    p_o = (table[0, 0] + table[1, 1]) / n
    p_label_0, p_label_1 = table[0].sum() / n, table[1].sum() / n
    p_pred_0, p_pred_1 = table[:, 0].sum() / n, table[:, 1].sum() / n
    p_e = p_label_0 * p_pred_0 + p_label_1 * p_pred_1
    return (p_o - p_e) / (1 - p_e)


def test_cohen_kappa_against_definition_and_textbook():
    table = np.array([[40, 10], [15, 35]])
    labels, predictions = from_table(40, 10, 15, 35)
    # p_o = 0.75, p_e = 0.5·0.55 + 0.5·0.45 = 0.5 → κ = 0.5.
    assert cls.cohen_kappa(labels, predictions) == pytest.approx(kappa_by_definition(table))
    assert cls.cohen_kappa(labels, predictions) == pytest.approx(0.5)
    labels, predictions = from_table(31, 4, 9, 6)
    assert cls.cohen_kappa(labels, predictions) == pytest.approx(
        kappa_by_definition(np.array([[31, 4], [9, 6]]))
    )
    # Wikipedia's "Cohen's kappa" worked example: 50 grant proposals, both readers yes 20,
    # A yes / B no 5, A no / B yes 10, both no 15: p_o = 0.7, p_e = 0.5, κ = 0.4.
    labels, predictions = from_table(tn=15, fp=10, fn=5, tp=20)
    assert cls.cohen_kappa(labels, predictions) == pytest.approx(0.4)
    # Perfect agreement is 1, chance-level agreement 0, constant and equal raters undefined.
    assert cls.cohen_kappa([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert cls.cohen_kappa(*from_table(10, 10, 10, 10)) == pytest.approx(0.0)
    assert math.isnan(cls.cohen_kappa([0, 0, 0], [0, 0, 0]))


def toy_mura() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 studies, interleaved images; study 'b' averages exactly 0.5."""
    study_ids = np.array(["a", "b", "c", "a", "b", "c", "a", "c", "c"])
    labels = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0])
    # a: (0.9 + 0.7 + 0.4) / 3 = 2/3 → abnormal (although one image is below ½);
    # b: (0.25 + 0.75) / 2 = 0.5 exactly (binary fractions) → normal, since the rule is > 0.5;
    # c: (0.1 + 0.6 + 0.2 + 0.1) / 4 = 0.25 → normal (although one image is above ½).
    probabilities = np.array([0.9, 0.25, 0.1, 0.7, 0.75, 0.6, 0.4, 0.2, 0.1])
    return study_ids, labels, probabilities


def test_study_level_mura_rule():
    studies = cls.study_level(*toy_mura())
    np.testing.assert_array_equal(studies.study_ids, ["a", "b", "c"])
    np.testing.assert_array_equal(studies.labels, [1, 0, 0])
    np.testing.assert_allclose(studies.probabilities, [2 / 3, 0.5, 0.25])
    assert studies.probabilities[1] == 0.5
    np.testing.assert_array_equal(studies.predictions, [1, 0, 0])
    np.testing.assert_array_equal(studies.num_images, [3, 2, 4])


def test_study_level_keeps_first_appearance_order():
    studies = cls.study_level(["z/", "y/", "z/"], [1, 0, 1], [0.9, 0.2, 0.8])
    np.testing.assert_array_equal(studies.study_ids, ["z/", "y/"])
    np.testing.assert_array_equal(studies.predictions, [1, 0])


def test_inconsistent_study_labels_raise():
    study_ids, labels, probabilities = toy_mura()
    labels[4] = 1  # one image of study 'b' now abnormal
    with pytest.raises(ValueError, match="'b'"):
        cls.study_level(study_ids, labels, probabilities)


def errors_at_rate(n: int, error_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels with exactly n·error_rate wrong predictions, spread evenly."""
    labels = np.arange(n) % 2
    wrong = np.zeros(n, bool)
    wrong[np.linspace(0, n - 1, round(n * error_rate)).astype(int)] = True
    return labels, np.where(wrong, 1 - labels, labels)


def test_bootstrap_contains_estimate_and_narrows_with_more_data():
    widths = {}
    for n in (100, 2000):
        labels, predictions = errors_at_rate(n, 0.2)
        estimate = cls.accuracy(labels, predictions)
        assert estimate == pytest.approx(0.8)
        low, high = cls.bootstrap_interval(cls.accuracy, labels, predictions)
        assert low < estimate < high
        widths[n] = high - low
    # Binomial: 2·1.96·√(0.8·0.2/n) ≈ 0.157 at n = 100 and ≈ 0.035 at n = 2,000 (√20 ≈ 4.5×).
    assert 0.12 < widths[100] < 0.2
    assert 0.025 < widths[2000] < 0.045
    assert widths[2000] < widths[100] / 3


def test_bootstrap_is_seeded_and_skips_nan_resamples():
    # 2 abnormal in 40: ~13% of resamples draw neither, where sensitivity is NaN.
    labels = np.zeros(40, int)
    labels[[3, 17]] = 1
    predictions = labels.copy()
    predictions[17] = 0
    first = cls.bootstrap_interval(cls.sensitivity, labels, predictions, num_resamples=300, seed=5)
    again = cls.bootstrap_interval(cls.sensitivity, labels, predictions, num_resamples=300, seed=5)
    assert first == again
    assert all(np.isfinite(first)) and 0.0 <= first[0] <= 0.5 <= first[1] <= 1.0
    only_normal = np.zeros(10, int)
    assert all(np.isnan(cls.bootstrap_interval(cls.sensitivity, only_normal, only_normal)))


def test_classification_report():
    study_ids, labels, probabilities = toy_mura()
    report = cls.classification_report(labels, probabilities, study_ids, num_resamples=200)
    # Images at > 0.5: predictions 1,0,0,1,1,1,0,0,0 against labels 1,0,0,1,0,0,1,0,0.
    assert report["confusion_matrix"] == [[4, 2], [1, 2]]
    assert report["sensitivity"] == pytest.approx(2 / 3)
    assert report["specificity"] == pytest.approx(4 / 6)
    assert report["accuracy"] == pytest.approx(6 / 9)
    assert report["roc_auc"] == pytest.approx(brute_force_auc(labels, probabilities))
    assert (report["num_images"], report["num_abnormal"], report["num_normal"]) == (9, 3, 6)
    # Studies: a abnormal → 1, b and c normal → 0; all three right.
    assert report["study_accuracy"] == 1.0 and report["study_kappa"] == 1.0
    assert (report["num_studies"], report["num_abnormal_studies"]) == (3, 1)
    for name in ("sensitivity", "specificity", "accuracy", "roc_auc", "study_accuracy"):
        low, high = report[f"{name}_ci"]
        assert low <= report[name] <= high, name
    assert "study_kappa_ci" in report
    plain = cls.classification_report(labels, probabilities, num_resamples=10)
    assert "study_accuracy" not in plain and "num_studies" not in plain


def test_paired_difference_matches_every_resample_enumerated():
    """On 5 test images × 2 seeds, all 5⁵ equally likely resamples can be listed: the bootstrap's
    percentile interval must match the exact quantiles of the statistic over them."""
    labels = np.array([0, 1, 0, 1, 1])
    arm = np.array([[0.2, 0.1], [0.9, 0.6], [0.4, 0.7], [0.6, 0.8], [0.3, 0.9]])
    reference = np.array([[0.5, 0.3], [0.4, 0.2], [0.6, 0.1], [0.7, 0.5], [0.2, 0.4]])

    def statistic(index):
        y = labels[list(index)]
        return np.mean(
            [cls.roc_auc(y, arm[list(index), s])
             - cls.roc_auc(y, reference[list(index), s]) for s in (0, 1)]
        )  # fmt: skip

    exact = np.array([statistic(i) for i in itertools.product(range(5), repeat=5)])
    exact = exact[~np.isnan(exact)]  # resamples with one class only have no AUC
    result = cls.paired_difference(labels, arm, reference, num_resamples=20000, seed=3)
    per_seed = [
        cls.roc_auc(labels, arm[:, s]) - cls.roc_auc(labels, reference[:, s]) for s in (0, 1)
    ]
    assert result["per_seed"] == pytest.approx(per_seed)
    assert result["difference"] == pytest.approx(np.mean(per_seed))
    low, high = np.quantile(exact, [0.025, 0.975])
    # The statistic takes few distinct values, so the quantiles agree to one step of it.
    assert result["ci"][0] == pytest.approx(low, abs=0.06)
    assert result["ci"][1] == pytest.approx(high, abs=0.06)
    assert result["ci"][0] < result["difference"] < result["ci"][1]


def test_paired_difference_of_an_arm_with_itself_is_zero_and_shapes_are_checked():
    labels = np.array([0, 1, 0, 1])
    scores = np.array([[0.1, 0.3], [0.8, 0.9], [0.4, 0.2], [0.7, 0.6]])
    result = cls.paired_difference(labels, scores, scores, num_resamples=50)
    assert result["difference"] == 0.0 and result["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="num_images=4, num_seeds"):
        cls.paired_difference(labels, scores, scores[:, :1])
