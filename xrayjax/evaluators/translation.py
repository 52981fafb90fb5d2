"""Translation quality without pretrained Inception weights (thesis sec. 3.2.2 judged it by eye).

- Kernel inception distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
  estimator of the squared maximum mean discrepancy between two feature samples, with the cubic
  polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets. No Inception network
  can be downloaded here, so the features come from a network this project trains: the
  classifier's penultimate layer, `ResNetClassifier.apply(..., return_features=True)` →
  (logits, features). These functions take the feature arrays only. Compare real target images
  against translated ones, and against untranslated sources as the reference point: the numbers
  are only comparable under the same feature network.
- Cycle-reconstruction L1 and SSIM (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01,
  K2 0.03, one channel, images in [0, 1]; the mean of the SSIM map without its 5-pixel border,
  as scikit-image's `structural_similarity(gaussian_weights=True, use_sample_covariance=False,
  data_range=1)`).
- Label preservation: a classifier trained on natural images, applied to translated images,
  scored against their source labels (classification.py's metrics).
- Anatomy preservation: Dice between a phantom's source mask and the bone of the translated image
  found by thresholding. A global threshold also catches soft tissue: per-image Otsu reaches
  Dice ≈ 0.99 on clean phantom renders but only ≈ 0.5-0.65 on radiograph-style phantoms (exact
  masks, natural-looking images), so read translated images' numbers against that reference.

Images are float in [−1, 1] (generator outputs) or uint8 [0, 255], one channel.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from xrayjax.data import transforms
from xrayjax.evaluators import classification, segmentation, statistics

KID_SUBSET_SIZE = 1000  # Bińkowski et al.'s default
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _features(name: str, values: Any) -> np.ndarray:
    """(N, D) finite float64 features, or ValueError."""
    array = np.asarray(values, np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_images, feature_dim) array, got {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between feature samples x (m, d) and y (n, d), cubic polynomial kernel.

    MMD²_u = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (n(n−1))
             − 2 Σ_{i,j} k(xᵢ, yⱼ) / (mn),
    with k(a, b) = (aᵀb / d + 1)³. It can be slightly negative when the samples agree.
    """
    x, y = _features("x", x), _features("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} and {y.shape[1]}")
    d, m, n = x.shape[1], x.shape[0], y.shape[0]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features_x: Any,
    features_y: Any,
    num_subsets: int = 10,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD² over random subsets (KID; module docstring).

    Each subset draws `subset_size` rows of each sample without replacement (default: the
    smaller sample's size, at most 1000); std is over subsets (population std).
    """
    x, y = _features("features_x", features_x), _features("features_y", features_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} and {y.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    largest = min(x.shape[0], y.shape[0])
    size = min(largest, KID_SUBSET_SIZE) if subset_size is None else subset_size
    if not 2 <= size <= largest:
        raise ValueError(f"subset_size must lie in [2, {largest}] (the smaller sample), got {size}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(
                x[rng.choice(x.shape[0], size, replace=False)],
                y[rng.choice(y.shape[0], size, replace=False)],
            )
            for _ in range(num_subsets)
        ]
    )
    return float(values.mean()), float(values.std())


def _images(name: str, values: Any) -> tuple[np.ndarray, float]:
    """(N, H, W) float64 images and their data range: 255 for uint8, else 2 ([−1, 1])."""
    array = np.asarray(values)
    data_range = 255.0 if array.dtype == np.uint8 else 2.0
    if array.ndim == 4 and array.shape[-1] == 1 or array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be (H, W[, 1]) or (N, H, W[, 1]) images, got {array.shape}")
    return array.astype(np.float64), data_range


def _same_shape(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} and {y.shape}")


def _unit_range(images: np.ndarray, data_range: float) -> np.ndarray:
    """uint8 [0, 255] or float [−1, 1] images → [0, 1]."""
    return images / 255.0 if data_range == 255.0 else (images + 1.0) / 2.0


def ssim(x: Any, y: Any) -> float:
    """Mean SSIM of one image pair, or the mean over a batch (N, H, W[, 1]); 1.0 when equal.

    Images are uint8 [0, 255] or float [−1, 1]; both are mapped to [0, 1] first (SSIM depends on
    the offset, not only the scale), so the two forms of one picture score the same.
    """
    xs, range_x = _images("x", x)
    ys, range_y = _images("y", y)
    _same_shape(xs, ys)
    if min(xs.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"images must be at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {xs.shape[1:]}")
    xs, ys = _unit_range(xs, range_x), _unit_range(ys, range_y)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    pad = (SSIM_WINDOW - 1) // 2

    def blur(image: np.ndarray) -> np.ndarray:
        window = (SSIM_WINDOW, SSIM_WINDOW)
        return cv2.GaussianBlur(image, window, SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    scores = []
    for a, b in zip(xs, ys, strict=True):
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        scores.append(float(np.mean((numerator / denominator)[pad:-pad, pad:-pad])))
    return float(np.mean(scores))


def cycle_l1(originals: Any, reconstructions: Any) -> float:
    """Mean absolute error of a cycle reconstruction, in [−1, 1] units (uint8 is rescaled)."""
    a, range_a = _images("originals", originals)
    b, range_b = _images("reconstructions", reconstructions)
    _same_shape(a, b)
    # Both in [−1, 1], as the training loss sees them.
    if range_a == 255.0:
        a = a / 127.5 - 1.0
    if range_b == 255.0:
        b = b / 127.5 - 1.0
    return float(np.mean(np.abs(a - b)))


def label_preservation(probabilities: Any, source_labels: Any, **report_kwargs: Any) -> dict:
    """classification_report of translated images against their source labels (1 = abnormal).

    `probabilities` are a natural-image classifier's probabilities of abnormal; the report's
    `accuracy` is the label-preservation rate, sensitivity/specificity split it by class. Keyword
    arguments (num_resamples, seed) go to classification.classification_report.
    """
    return classification.classification_report(source_labels, probabilities, **report_kwargs)


def _to_uint8(image: np.ndarray, data_range: float) -> np.ndarray:
    if data_range == 255.0:
        return np.clip(np.round(image), 0, 255).astype(np.uint8)
    return transforms.to_uint8(image)


def anatomy_preservation_dice(
    source_masks: Any, translated_images: Any, threshold: float | None = None
) -> dict[str, Any]:
    """Dice between source masks and the bone of translated images found by thresholding.

    Bone is where the image exceeds `threshold` (in the images' own scale), or with
    threshold=None each image's Otsu threshold. Keys: dice (per image), dice_mean, dice_std,
    thresholds (per image, in the images' scale), num_images.
    """
    images, data_range = _images("translated_images", translated_images)
    masks = np.asarray(source_masks)
    if masks.ndim == 4 and masks.shape[-1] == 1 or masks.ndim == 3 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    masks = masks[None] if masks.ndim == 2 else masks
    if masks.shape != images.shape:
        raise ValueError(f"mask of the wrong size: masks {masks.shape}, images {images.shape}")
    scores, thresholds = [], []
    for mask, image in zip(masks, images, strict=True):
        if threshold is None:
            levels = _to_uint8(image, data_range)
            level, _ = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
            bone = segmentation.binarize(levels, level)
            # Otsu splits uint8 levels (bone > level); report the cut in the images' scale.
            cut = level if data_range == 255.0 else (level + 0.5) / 127.5 - 1.0
        else:
            cut = float(threshold)
            bone = segmentation.binarize(image, cut)
        thresholds.append(float(cut))
        scores.append(segmentation.dice(bone, mask))
    mean, std = statistics.mean_std(scores)
    return {
        "dice": scores,
        "dice_mean": mean,
        "dice_std": std,
        "thresholds": thresholds,
        "num_images": len(scores),
    }
