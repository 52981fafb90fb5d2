"""Bone segmentation quality: Dice, IoU and the 95th-percentile boundary distance (thesis sec. 4.3).

The thesis judged its eq. 66 (`G_CB(G_BA(a))`) and eq. 67 (`G_CB(a)`) segmentations by eye only;
these numbers measure them wherever ground-truth masks exist (phantoms, hand-labelled folders).

Conventions, for binary masks where any nonzero pixel is bone:
- Dice = 2|P ∩ T| / (|P| + |T|), IoU = |P ∩ T| / |P ∪ T|. Both masks empty: 1.0 (the prediction
  agrees perfectly with "no bone"); exactly one empty: 0.0 (no overlap, as the formulas give).
- Boundary distance (HD95): the surface of a mask is its pixels with a 4-neighbour outside it
  (the image border counts as outside). Every surface pixel of each mask gets its Euclidean
  distance to the nearest surface pixel of the other; the 95th percentile of both sets pooled
  is the result, in pixels (MedPy's `hd95`). Both empty: 0.0. Exactly one empty: +inf, since
  the distance to an empty set is unbounded; reports count these apart instead of averaging them.
Plain numpy and OpenCV: evaluators take predictions, not models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from xrayjax.evaluators import statistics

METRICS = ("dice", "iou", "boundary_distance_95")


def _mask(name: str, values: Any) -> np.ndarray:
    """A 2-D bool mask from (H, W) or (H, W, 1) values (nonzero = bone), or ValueError."""
    array = np.asarray(values)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask (H, W) or (H, W, 1), got shape {array.shape}")
    return array != 0


def _pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool, or ValueError naming the sizes when they differ."""
    p, t = _mask("pred", pred), _mask("truth", truth)
    if p.shape != t.shape:
        raise ValueError(f"mask of the wrong size: prediction {p.shape}, ground truth {t.shape}")
    return p, t


def binarize(probabilities_or_images: Any, threshold: float = 0.0) -> np.ndarray:
    """uint8 {0, 1} masks: 1 where a value exceeds `threshold` (generator outputs: [−1, 1])."""
    return (np.asarray(probabilities_or_images) > threshold).astype(np.uint8)


def dice(pred: Any, truth: Any) -> float:
    """Dice coefficient 2|P∩T| / (|P|+|T|); 1.0 when both masks are empty, 0.0 when one is."""
    p, t = _pair(pred, truth)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def iou(pred: Any, truth: Any) -> float:
    """Intersection over union |P∩T| / |P∪T|; 1.0 when both masks are empty, 0.0 when one is."""
    p, t = _pair(pred, truth)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask or outside the image."""
    solid = mask.astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    inner = cv2.erode(solid, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & (inner == 0)


def _distances_to(surface: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every pixel to the nearest pixel of `surface`."""
    return cv2.distanceTransform((~surface).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def boundary_distance_95(pred: Any, truth: Any) -> float:
    """95th percentile of pooled symmetric surface distances (px); 0 both empty, inf one empty."""
    p, t = _pair(pred, truth)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return math.inf
    sp, st = _surface(p), _surface(t)
    pooled = np.concatenate([_distances_to(st)[sp], _distances_to(sp)[st]])
    return float(np.percentile(pooled, 95))


def segmentation_report(preds: Sequence[Any], truths: Sequence[Any | None]) -> dict[str, Any]:
    """Per-image Dice, IoU and HD95 with mean ± std; images whose truth is None are counted apart.

    `preds` and `truths` are sequences (or (N, H, W[, 1]) arrays) of binary masks, in the same
    order. Keys: `<metric>` (per-image list, for measured images in order), `<metric>_mean`,
    `<metric>_std` for each of dice, iou, boundary_distance_95; `indices` (positions of the
    measured images), num_images (measured), num_without_truth, and
    boundary_distance_95_num_infinite (one mask empty, the other not: left out of its mean/std).
    """
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions but {len(truths)} ground-truth masks")
    per_image: dict[str, list[float]] = {name: [] for name in METRICS}
    indices = []
    for index, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        if truth is None:
            continue
        try:
            pair = _pair(pred, truth)
        except ValueError as error:
            raise ValueError(f"image {index}: {error}") from None
        indices.append(index)
        per_image["dice"].append(dice(*pair))
        per_image["iou"].append(iou(*pair))
        per_image["boundary_distance_95"].append(boundary_distance_95(*pair))
    report: dict[str, Any] = {}
    for name, values in per_image.items():
        report[name] = values
        report[f"{name}_mean"], report[f"{name}_std"] = statistics.mean_std(values)
    hd95 = per_image["boundary_distance_95"]
    report["boundary_distance_95_num_infinite"] = sum(1 for v in hd95 if math.isinf(v))
    report["indices"] = indices
    report["num_images"] = len(indices)
    report["num_without_truth"] = len(truths) - len(indices)
    return report


def compare_methods(
    preds_by_method: Mapping[str, Sequence[Any]], truths: Sequence[Any | None]
) -> dict[str, dict[str, Any]]:
    """segmentation_report for each method against the same truths, keyed by method.

    E.g. `compare_methods({"eq66": masks_66, "eq67": masks_67}, truths)` puts the thesis's two
    segmentation routes side by side (eq. 66: `G_CB(G_BA(a))`, eq. 67: `G_CB(a)`).
    """
    if not preds_by_method:
        raise ValueError("compare_methods needs at least one method")
    return {name: segmentation_report(preds, truths) for name, preds in preds_by_method.items()}


def otsu_bone(image: Any) -> np.ndarray:
    """uint8 {0, 1}: pixels above the image's own Otsu threshold, a segmentation that learns
    nothing (the baseline beside learnt ones). Images are uint8 or float in [−1, 1], one channel.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"otsu_bone needs one 2-D image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.round((array.astype(np.float64) + 1.0) * 127.5), 0, 255)
        array = array.astype(np.uint8)
    level, _ = cv2.threshold(array, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return (array > level).astype(np.uint8)
