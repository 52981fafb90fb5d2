"""Normal/abnormal classification metrics: the thesis's image-level numbers and MURA's study level.

Label 1 = abnormal = positive, 0 = normal. The thesis (sec. 4.2, Table 2) reports image-level
sensitivity (recall of abnormal), specificity (recall of normal) and accuracy; MURA's official
metric is Cohen's kappa on studies, a study being abnormal when the mean of its images'
probabilities of abnormal exceeds 0.5. With ~300 test images a single number decides little, so
every scalar comes with a percentile-bootstrap interval.

A metric whose denominator is empty (sensitivity without abnormal examples, AUC with one class
only, ...) is NaN rather than 0 or 1, so an undefined number cannot pass for a measured one.
Everything here is plain numpy: evaluators take predictions, not models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

# MURA's rule, used for images too: abnormal only when the probability is strictly above ½.
THRESHOLD = 0.5


def _binary(name: str, values: Any) -> np.ndarray:
    """A 1-D int64 array of 0/1 values, or ValueError."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 (normal) and 1 (abnormal)")
    return array.astype(np.int64)


def _scores(name: str, values: Any, size: int) -> np.ndarray:
    """A 1-D float64 array of `size` finite numbers, or ValueError."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0."""
    return float(numerator / denominator) if denominator else float("nan")


def confusion_matrix(labels: Any, predictions: Any) -> np.ndarray:
    """2×2 int64 counts [[TN, FP], [FN, TP]]: rows are labels, columns predictions."""
    labels = _binary("labels", labels)
    predictions = _binary("predictions", predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.shape[0]} labels but {predictions.shape[0]} predictions")
    # Cell index 2·label + prediction: 0 = TN, 1 = FP, 2 = FN, 3 = TP.
    return np.bincount(2 * labels + predictions, minlength=4).reshape(2, 2)


def sensitivity(labels: Any, predictions: Any) -> float:
    """Recall of abnormal, TP / (TP + FN); NaN without abnormal examples."""
    (_, _), (fn, tp) = confusion_matrix(labels, predictions)
    return _ratio(tp, tp + fn)


def specificity(labels: Any, predictions: Any) -> float:
    """Recall of normal, TN / (TN + FP); NaN without normal examples."""
    (tn, fp), (_, _) = confusion_matrix(labels, predictions)
    return _ratio(tn, tn + fp)


def accuracy(labels: Any, predictions: Any) -> float:
    """(TP + TN) / N; NaN without examples."""
    matrix = confusion_matrix(labels, predictions)
    return _ratio(np.trace(matrix), matrix.sum())


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve = P(score of an abnormal > score of a normal), ties counting ½.

    Mann-Whitney form: with midranks r of all scores (ties share their average rank),
    AUC = (Σ r over abnormal − n₊(n₊+1)/2) / (n₊·n₋). NaN when a class is absent.
    """
    labels = _binary("labels", labels)
    scores = _scores("scores", scores, labels.shape[0])
    n_pos = int(labels.sum())
    n_neg = labels.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Distinct value v occupies ranks end−count+1 … end (1-based); its midrank is their mean.
    ends = np.cumsum(counts)
    midranks = ends - (counts - 1) / 2.0
    rank_sum = midranks[inverse][labels == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def cohen_kappa(labels: Any, predictions: Any) -> float:
    """Cohen's κ = (p_o − p_e) / (1 − p_e); NaN when p_e = 1 (both sides constant and equal)."""
    matrix = confusion_matrix(labels, predictions).astype(np.float64)
    n = matrix.sum()
    if n == 0:
        return float("nan")
    observed = np.trace(matrix) / n
    # Chance agreement: products of the label and prediction marginals.
    expected = float(matrix.sum(axis=1) @ matrix.sum(axis=0)) / n**2
    return _ratio(observed - expected, 1.0 - expected)


class Studies(NamedTuple):
    """Per-study arrays, studies in order of first appearance."""

    study_ids: np.ndarray
    labels: np.ndarray  # int64, 1 = abnormal
    probabilities: np.ndarray  # mean of the study's image probabilities of abnormal
    predictions: np.ndarray  # int64, probabilities > 0.5
    num_images: np.ndarray  # int64, images per study


def study_level(study_ids: Any, labels: Any, probabilities: Any) -> Studies:
    """Images → studies by MURA's rule: mean probability of abnormal, abnormal if > 0.5.

    Raises ValueError naming the first study whose images carry different labels.
    """
    study_ids = np.asarray(study_ids)
    labels = _binary("labels", labels)
    probabilities = _scores("probabilities", probabilities, labels.shape[0])
    if study_ids.shape != labels.shape:
        raise ValueError(f"{study_ids.shape[0]} study ids but {labels.shape[0]} labels")
    unique, first, inverse = np.unique(study_ids, return_index=True, return_inverse=True)
    # Renumber studies by first appearance, so outputs follow the input order.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    study = rank[inverse.reshape(-1)]
    num_studies = order.size
    counts = np.bincount(study, minlength=num_studies)
    positives = np.bincount(study, weights=labels, minlength=num_studies)
    mixed = np.flatnonzero((positives > 0) & (positives < counts))
    if mixed.size:
        name = unique[order[mixed[0]]]
        raise ValueError(
            f"study {name!r} has images labelled both normal and abnormal "
            f"({int(positives[mixed[0]])} of {int(counts[mixed[0]])} abnormal)"
        )
    mean = np.bincount(study, weights=probabilities, minlength=num_studies) / counts
    return Studies(
        study_ids=unique[order],
        labels=(positives > 0).astype(np.int64),
        probabilities=mean,
        predictions=(mean > THRESHOLD).astype(np.int64),
        num_images=counts.astype(np.int64),
    )


def bootstrap_interval(
    metric_fn: Callable[..., float],
    *arrays: Any,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of metric_fn(*arrays), resampling examples with replacement.

    All arrays are indexed by the same resampled indices. Resamples where the metric is NaN
    (e.g. no abnormal example drawn) are skipped; (NaN, NaN) if every one is. Examples are
    treated as independent: for image-level metrics this ignores that images of one study are
    correlated, so the interval is somewhat optimistic; study-level metrics resample studies.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"arrays differ in length: {[a.shape[0] for a in arrays]}")
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(num_resamples)
    for i in range(num_resamples):
        index = rng.integers(0, n, n)
        values[i] = metric_fn(*(a[index] for a in arrays))
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def classification_report(
    labels: Any,
    probabilities: Any,
    study_ids: Any = None,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Named numbers for a test set: image-level metrics, and MURA study-level ones if ids given.

    Keys: sensitivity, specificity, accuracy, roc_auc (each with `<name>_ci` = [low, high]),
    confusion_matrix [[TN, FP], [FN, TP]], num_images, num_abnormal, num_normal; with study_ids
    also study_accuracy, study_kappa (+ `_ci`), num_studies, num_abnormal_studies. Images are
    abnormal when their probability of abnormal is > 0.5. Plain Python types, ready for JSON.
    """
    labels = _binary("labels", labels)
    probabilities = _scores("probabilities", probabilities, labels.shape[0])
    predictions = (probabilities > THRESHOLD).astype(np.int64)

    def with_interval(name: str, fn: Callable[..., float], *arrays: np.ndarray) -> dict:
        # One seed for every metric: all intervals come from the same resamples.
        low, high = bootstrap_interval(fn, *arrays, num_resamples=num_resamples, seed=seed)
        return {name: fn(*arrays), f"{name}_ci": [low, high]}

    report: dict[str, Any] = {}
    report |= with_interval("sensitivity", sensitivity, labels, predictions)
    report |= with_interval("specificity", specificity, labels, predictions)
    report |= with_interval("accuracy", accuracy, labels, predictions)
    report |= with_interval("roc_auc", roc_auc, labels, probabilities)
    report["confusion_matrix"] = confusion_matrix(labels, predictions).tolist()
    report["num_images"] = int(labels.size)
    report["num_abnormal"] = int(labels.sum())
    report["num_normal"] = int(labels.size - labels.sum())
    if study_ids is not None:
        studies = study_level(study_ids, labels, probabilities)
        report |= with_interval("study_accuracy", accuracy, studies.labels, studies.predictions)
        report |= with_interval("study_kappa", cohen_kappa, studies.labels, studies.predictions)
        report["num_studies"] = int(studies.labels.size)
        report["num_abnormal_studies"] = int(studies.labels.sum())
    return report


def paired_difference(
    labels: Any,
    scores: Any,
    reference_scores: Any,
    metric: Callable[[Any, Any], float] = roc_auc,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """How much an arm beats a reference arm on one test set, paired over seeds and images.

    `scores` and `reference_scores` are (N, S): column s holds the test-image scores of the
    arm's and the reference's run with seed s. The difference is the mean over seeds of
    metric(arm_s) − metric(reference_s); its interval is a percentile bootstrap over test
    images, each resample drawing the same images for every seed and both arms, so what the
    two arms share (the test images, the seeds) cancels. Keys: difference, ci, per_seed.
    """
    labels = _binary("labels", labels)
    arm = np.asarray(scores, np.float64)
    ref = np.asarray(reference_scores, np.float64)
    arm, ref = (a[:, None] if a.ndim == 1 else a for a in (arm, ref))
    if arm.shape != ref.shape or arm.ndim != 2 or arm.shape[0] != labels.shape[0]:
        raise ValueError(
            f"scores {arm.shape} and reference_scores {ref.shape} must both be "
            f"(num_images={labels.shape[0]}, num_seeds)"
        )
    if not (np.isfinite(arm).all() and np.isfinite(ref).all()):
        raise ValueError("scores must be finite")

    def per_seed(y: np.ndarray, a: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.array([metric(y, a[:, s]) - metric(y, r[:, s]) for s in range(a.shape[1])])

    def mean_difference(y: np.ndarray, a: np.ndarray, r: np.ndarray) -> float:
        return float(np.mean(per_seed(y, a, r)))

    low, high = bootstrap_interval(
        mean_difference, labels, arm, ref, num_resamples=num_resamples, seed=seed, level=level
    )
    return {
        "difference": mean_difference(labels, arm, ref),
        "ci": [low, high],
        "per_seed": per_seed(labels, arm, ref).tolist(),
    }
