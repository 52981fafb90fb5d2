"""Dice, IoU and the 95th-percentile boundary distance against hand-made masks."""

import math

import numpy as np
import pytest

from xrayjax.evaluators import segmentation


def _square(x0, y0, size=10, shape=(24, 32)):
    mask = np.zeros(shape, np.uint8)
    mask[y0 : y0 + size, x0 : x0 + size] = 1
    return mask


def test_squares_offset_by_two_pixels():
    a, b = _square(5, 5), _square(7, 5)
    # Overlap 10 × 8 = 80 px; |A| + |B| = 200; union 120.
    assert segmentation.dice(a, b) == pytest.approx(0.8)
    assert segmentation.iou(a, b) == pytest.approx(80 / 120)
    # Each 36-px outline against the other: 16 distances of 0, 4 of 1, 16 of 2 (left column and
    # the inner right-column pixels at 2, the corners nearest the other square's rows at 0/1),
    # the same both ways; the 95th percentile of the 72 pooled distances is 2.
    assert segmentation.boundary_distance_95(a, b) == pytest.approx(2.0)
    assert segmentation.boundary_distance_95(b, a) == pytest.approx(2.0)


def test_identical_and_disjoint_masks():
    a = _square(5, 5)
    assert (segmentation.dice(a, a), segmentation.iou(a, a)) == (1.0, 1.0)
    assert segmentation.boundary_distance_95(a, a) == 0.0
    p, q = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    p[3, 3], q[3, 8] = 1, 1
    assert (segmentation.dice(p, q), segmentation.iou(p, q)) == (0.0, 0.0)
    assert segmentation.boundary_distance_95(p, q) == pytest.approx(5.0)
    q[7, 6] = 1  # a second pixel: 3-4-5 triangle from p
    assert segmentation.dice(p, q) == 0.0
    # Distances: p→q min(5, 5) = 5; q→p 5 and 5: all 5.
    assert segmentation.boundary_distance_95(p, q) == pytest.approx(5.0)


def test_percentile_ignores_a_lone_outlier():
    truth = _square(5, 5, shape=(40, 40))
    pred = truth.copy()
    pred[35, 35] = 1  # far speck: one distance of ~25 px among 72 zeros
    assert segmentation.boundary_distance_95(pred, truth) == 0.0
    assert segmentation.dice(pred, truth) == pytest.approx(200 / 201)


def test_empty_masks():
    empty, a = np.zeros((16, 16), np.uint8), _square(2, 2, 5, (16, 16))
    assert segmentation.dice(empty, empty) == 1.0
    assert segmentation.iou(empty, empty) == 1.0
    assert segmentation.boundary_distance_95(empty, empty) == 0.0
    for pred, truth in ((a, empty), (empty, a)):
        assert segmentation.dice(pred, truth) == 0.0
        assert segmentation.iou(pred, truth) == 0.0
        assert segmentation.boundary_distance_95(pred, truth) == math.inf


def test_mask_forms_and_bad_sizes():
    a = _square(5, 5)
    assert segmentation.dice(a[..., None], (a * 255).astype(np.uint8)) == 1.0
    assert segmentation.dice(a.astype(bool), a.astype(np.float32)) == 1.0
    with pytest.raises(ValueError, match="wrong size"):
        segmentation.dice(a, a[:-1])
    with pytest.raises(ValueError, match="2-D"):
        segmentation.iou(np.ones((2, 3, 4)), np.ones((2, 3, 4)))


def test_binarize_generator_outputs():
    values = np.array([[-1.0, -0.2, 0.0], [0.01, 0.5, 1.0]])
    np.testing.assert_array_equal(segmentation.binarize(values), [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(segmentation.binarize(values, 0.4), [[0, 0, 0], [0, 1, 1]])
    assert segmentation.binarize(values).dtype == np.uint8


def test_report_excludes_images_without_truth():
    a, b = _square(5, 5), _square(7, 5)
    empty = np.zeros_like(a)
    report = segmentation.segmentation_report([a, a, b, empty], [b, None, b, a])
    assert report["num_images"] == 3 and report["num_without_truth"] == 1
    assert report["indices"] == [0, 2, 3]
    assert report["dice"] == pytest.approx([0.8, 1.0, 0.0])
    assert report["dice_mean"] == pytest.approx(0.6)
    assert report["dice_std"] == pytest.approx(np.std([0.8, 1.0, 0.0]))
    assert report["iou_mean"] == pytest.approx((2 / 3 + 1.0) / 3)
    # The empty prediction has no boundary distance: counted apart, left out of mean and std.
    assert report["boundary_distance_95"][2] == math.inf
    assert report["boundary_distance_95_num_infinite"] == 1
    assert report["boundary_distance_95_mean"] == pytest.approx(1.0)
    assert report["boundary_distance_95_std"] == pytest.approx(1.0)


def test_report_names_the_image_with_a_wrong_size():
    a = _square(5, 5)
    with pytest.raises(ValueError, match="image 1: mask of the wrong size"):
        segmentation.segmentation_report([a, a[:-2]], [a, a])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        segmentation.segmentation_report([a, a], [a])


def test_compare_methods_side_by_side():
    a, b = _square(5, 5), _square(7, 5)
    truths = np.stack([a, a])
    both = segmentation.compare_methods({"eq66": [a, b], "eq67": np.stack([b, b])}, truths)
    assert set(both) == {"eq66", "eq67"}
    assert both["eq66"]["dice"] == pytest.approx([1.0, 0.8])
    assert both["eq67"]["dice_mean"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        segmentation.compare_methods({}, truths)


def test_otsu_baseline_on_phantoms_with_known_masks():
    """The baseline that learns nothing: on a clean render (bone on black) it is the bone; on a
    radiograph-style one it keeps every bone pixel but takes the soft tissue along."""
    from data_prep import render

    for index in range(3):
        clean = render.render_phantom("forearm", "clean", 3, index, 64)
        bone = segmentation.otsu_bone(clean.image)
        assert bone.dtype == np.uint8 and set(np.unique(bone)) <= {0, 1}
        assert segmentation.dice(bone, clean.mask) > 0.97
        xray = render.render_phantom("forearm", "radiograph", 3, index, 64)
        bone = segmentation.otsu_bone(xray.image)
        assert (bone & xray.mask).sum() >= 0.99 * xray.mask.sum()
        assert segmentation.dice(bone, xray.mask) < 0.6
        # The same picture in [−1, 1] gives the same mask.
        as_float = xray.image.astype(np.float32) / 127.5 - 1.0
        assert np.array_equal(segmentation.otsu_bone(as_float[:, :, None]), bone)
    with pytest.raises(ValueError, match="one 2-D image"):
        segmentation.otsu_bone(np.zeros((2, 8, 8)))
