"""KID, SSIM, cycle L1, label and anatomy preservation."""

import numpy as np
import pytest

from data_prep import render
from xrayjax.evaluators import translation


def _mmd2_double_loop(x, y):
    """The unbiased estimator written out term by term."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_matches_the_double_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(9, 5))
    assert translation.mmd2_unbiased(x, y) == pytest.approx(_mmd2_double_loop(x, y), rel=1e-10)
    # One subset holding every row is a permutation of the full samples: the same number.
    z = rng.normal(size=(7, 5))
    mean, std = translation.kernel_inception_distance(x, z, num_subsets=1, subset_size=7)
    assert mean == pytest.approx(_mmd2_double_loop(x, z), rel=1e-10) and std == 0.0


def test_kid_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same_mean, same_std = translation.kernel_inception_distance(x, y, 20, 100, seed=0)
    assert abs(same_mean) < same_std
    means = [
        translation.kernel_inception_distance(x, y + shift, 20, 100, seed=0)[0]
        for shift in (0.25, 0.5, 1.0)
    ]
    assert means[0] > 3 * same_std and means[0] < means[1] < means[2]
    # Deterministic for a seed, different for another.
    again = translation.kernel_inception_distance(x, y, 20, 100, seed=0)
    assert again == (same_mean, same_std)
    assert translation.kernel_inception_distance(x, y, 20, 100, seed=1) != again


def test_kid_bad_arguments():
    x = np.ones((10, 4))
    with pytest.raises(ValueError, match="feature sizes differ"):
        translation.kernel_inception_distance(x, np.ones((10, 3)))
    with pytest.raises(ValueError, match="subset_size"):
        translation.kernel_inception_distance(x, x, subset_size=11)
    with pytest.raises(ValueError, match="2-D"):
        translation.kernel_inception_distance(np.ones(10), x)
    with pytest.raises(ValueError, match="finite"):
        translation.kernel_inception_distance(np.full((10, 4), np.nan), x)
    # Default subset size: the smaller sample (here 10), so one subset is everything.
    assert translation.kernel_inception_distance(x, x, num_subsets=2)[1] == 0.0


def _reference_ssim(a, b):
    """scikit-image's Gaussian SSIM for [0, 1] images, written with scipy.ndimage."""
    ndimage = pytest.importorskip("scipy.ndimage")

    def blur(image):
        return ndimage.gaussian_filter(image, 1.5, mode="reflect", truncate=3.5)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map[5:-5, 5:-5].mean()


def test_ssim_identity_noise_and_reference():
    image = render.render_phantom("wrist", "radiograph", 0, 1, 64).image
    assert translation.ssim(image, image) == pytest.approx(1.0)
    floats = image / 127.5 - 1.0
    assert translation.ssim(floats, floats) == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    scores = [
        translation.ssim(floats, np.clip(floats + rng.normal(0, sigma, floats.shape), -1, 1))
        for sigma in (0.02, 0.1, 0.4)
    ]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    noisy = np.clip(floats + rng.normal(0, 0.1, floats.shape), -1, 1)
    assert translation.ssim(floats, noisy) == pytest.approx(translation.ssim(noisy, floats))
    assert translation.ssim(floats, noisy) == pytest.approx(
        _reference_ssim((floats + 1) / 2, (noisy + 1) / 2), abs=1e-6
    )
    # uint8 and [−1, 1] of the same pictures agree; a batch is the mean of its pairs.
    noisy_u8 = np.round((noisy + 1) * 127.5).astype(np.uint8)
    assert translation.ssim(image, noisy_u8) == pytest.approx(
        translation.ssim(floats, noisy_u8 / 127.5 - 1.0), abs=1e-9
    )
    batch = translation.ssim(np.stack([floats, floats])[..., None], np.stack([floats, noisy]))
    assert batch == pytest.approx((1.0 + translation.ssim(floats, noisy)) / 2)
    with pytest.raises(ValueError, match="shapes differ"):
        translation.ssim(floats, floats[:-1])
    assert translation.ssim(image, floats) == pytest.approx(1.0)


def test_cycle_l1():
    a = np.zeros((2, 16, 16), np.float32)
    assert translation.cycle_l1(a, a + 0.25) == pytest.approx(0.25)
    full = np.full((16, 16), 255, np.uint8)
    assert translation.cycle_l1(full, np.ones((16, 16))) == pytest.approx(0.0)
    assert translation.cycle_l1(full, -np.ones((16, 16))) == pytest.approx(2.0)


def test_label_preservation_uses_the_classification_metrics():
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.7, 0.9, 0.8, 0.2])
    report = translation.label_preservation(probabilities, labels, num_resamples=50)
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["sensitivity"] == pytest.approx(2 / 3)
    assert report["specificity"] == pytest.approx(1 / 2)
    assert report["num_images"] == 5


def test_anatomy_preservation_dice():
    phantoms = [render.render_phantom("forearm", "clean", 0, i, 64) for i in range(3)]
    masks = np.stack([p.mask for p in phantoms])
    images = np.stack([p.image for p in phantoms])
    exact = translation.anatomy_preservation_dice(masks, masks.astype(np.float32) * 2 - 1)
    assert exact["dice"] == pytest.approx([1.0, 1.0, 1.0]) and exact["num_images"] == 3
    clean = translation.anatomy_preservation_dice(masks[..., None], images)
    assert clean["dice_mean"] > 0.95 and len(clean["thresholds"]) == 3
    # The same pictures in [−1, 1] give the same Dice (Otsu on the same levels).
    floats = translation.anatomy_preservation_dice(masks, images / 127.5 - 1.0)
    assert floats["dice"] == pytest.approx(clean["dice"])
    fixed = translation.anatomy_preservation_dice(masks, images, threshold=0)
    assert fixed["dice"] == pytest.approx([1.0, 1.0, 1.0])  # clean renders: bone == image > 0
    with pytest.raises(ValueError, match="wrong size"):
        translation.anatomy_preservation_dice(masks[:, :-1], images)
