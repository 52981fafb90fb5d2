"""Phantom renderer: determinism, exact masks, removed segments, and the geometry it reports."""

import itertools
import math

import cv2
import numpy as np
import pytest

from data_prep import render

COMBINATIONS = list(itertools.product(render.BODY_PARTS, render.STYLES))


def _components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask, connectivity=8)[0] - 1  # minus the background


def _axis_frame(axis: np.ndarray, mask: np.ndarray):
    """Mask pixels as (along, across) offsets from the distal axis point, plus the axis length."""
    prox, dist = axis[:2].astype(float), axis[2:].astype(float)
    length = np.linalg.norm(dist - prox)
    along_dir = (dist - prox) / length
    across_dir = np.array([-along_dir[1], along_dir[0]])
    ys, xs = np.nonzero(mask)
    rel = np.stack([xs, ys], 1) - dist
    return rel @ along_dir, rel @ across_dir, length


def _measured_inclination(mask: np.ndarray, axis: np.ndarray) -> tuple[float, float]:
    """Angle of the distal articular surface to the axis' perpendicular, and the slope's sign.

    For each offset across the axis, the most distal radius pixel along the axis lies on the
    articular surface; a line fitted to the central half of those points gives the angle.
    """
    along, across, length = _axis_frame(axis, mask)
    scale = length / 23.5  # pixels per cm: the radius is 22-25 cm long
    near = along > -1.5 * scale  # the flared end, where the surface spans the full width
    bins = np.round(across[near]).astype(int)
    tops = np.full(bins.max() - bins.min() + 1, -np.inf)
    np.maximum.at(tops, bins - bins.min(), along[near])
    offsets = np.arange(bins.min(), bins.max() + 1)
    quarter = len(offsets) // 4
    slope = np.polyfit(offsets[quarter:-quarter], tops[quarter:-quarter], 1)[0]
    return math.degrees(math.atan(abs(slope))), float(np.sign(slope))


@pytest.mark.parametrize(("body_part", "style"), COMBINATIONS)
def test_same_arguments_give_the_same_phantom(body_part, style):
    first = render.render_phantom(body_part, style, seed=3, index=7, image_size=96)
    again = render.render_phantom(body_part, style, seed=3, index=7, image_size=96)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)
    np.testing.assert_array_equal(first.radius_axis, again.radius_axis)
    assert (first.label, first.rotation_deg) == (again.label, again.rotation_deg)
    for other in ({"seed": 3, "index": 8}, {"seed": 4, "index": 7}):
        changed = render.render_phantom(body_part, style, image_size=96, **other)
        assert not np.array_equal(first.image, changed.image)


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_clean_mask_is_exactly_the_bone_and_radiograph_shares_the_limb(body_part):
    for index in range(4):
        clean = render.render_phantom(body_part, "clean", 1, index, image_size=128)
        assert clean.image.dtype == np.uint8 and clean.image.shape == (128, 128)
        assert clean.mask.dtype == np.uint8 and clean.mask.shape == (128, 128)
        assert set(np.unique(clean.mask)) == {0, 1}
        np.testing.assert_array_equal(clean.mask, (clean.image > 0).astype(np.uint8))
        xray = render.render_phantom(body_part, "radiograph", 1, index, image_size=128)
        np.testing.assert_array_equal(xray.mask, clean.mask)
        np.testing.assert_array_equal(xray.radius_axis, clean.radius_axis)
        assert (xray.label, xray.rotation_deg) == (clean.label, clean.rotation_deg)
        # Soft tissue surrounds the bones (black in the clean style), and bone is brighter.
        ring = cv2.dilate(clean.mask, np.ones((5, 5), np.uint8)) - clean.mask
        assert (xray.image[ring == 1] > 0).mean() > 0.9
        assert xray.image[clean.mask == 1].mean() > xray.image[clean.mask == 0].mean() + 20


def test_labels_forearms_half_abnormal_wrists_never():
    forearm = [
        render.render_phantom("forearm", "clean", 9, i, image_size=64).label for i in range(40)
    ]
    assert set(forearm) == {0, 1} and 8 <= sum(forearm) <= 32
    wrist = [render.render_phantom("wrist", "clean", 9, i, image_size=64).label for i in range(10)]
    assert wrist == [0] * 10


def test_removed_segment_splits_the_bone_and_changes_nothing_else():
    for index in range(6):
        broken = render.render_phantom("forearm", "clean", 2, index, abnormal=True)
        whole = render.render_phantom("forearm", "clean", 2, index, abnormal=False)
        assert (broken.label, whole.label) == (1, 0)
        assert _components(broken.mask) > _components(whole.mask)
        assert np.all(broken.mask <= whole.mask)
        removed = whole.mask.sum() - broken.mask.sum()
        assert 0 < removed < 0.15 * whole.mask.sum()
        np.testing.assert_array_equal(broken.radius_axis, whole.radius_axis)


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_radial_inclination_measured_from_the_radius_mask(body_part):
    rotations = []
    for index, angle in enumerate((15.0, 19.5, 24.0, 30.0)):
        # A large render, so that pixel steps along the surface barely move the fitted line.
        phantom = render.render_phantom(body_part, "clean", 11, index, 768, False, angle)
        assert phantom.radial_inclination_deg == angle
        rotations.append(phantom.rotation_deg)
        mask = render.radius_mask(body_part, 11, index, 768, radial_inclination_deg=angle)
        measured, slope_sign = _measured_inclination(mask, phantom.radius_axis)
        assert abs(measured - angle) < 1.0, (index, measured, angle)
        if body_part == "forearm":
            # The radial styloid, away from the ulna, is the more distal side.
            _, across_ulna, _ = _axis_frame(phantom.radius_axis, phantom.mask & (1 - mask))
            assert slope_sign == -np.sign(across_ulna.mean())
    assert max(rotations) - min(rotations) > 5  # the angles were checked at several rotations


def test_rotation_within_limits_and_axis_matches_the_radius_mask():
    rotations = [
        render.render_phantom("forearm", "clean", seed, index, image_size=48).rotation_deg
        for seed in range(3)
        for index in range(30)
    ]
    assert max(abs(r) for r in rotations) <= render.MAX_ROTATION_DEG
    assert max(rotations) > 10 and min(rotations) < -10
    for index in range(6):
        phantom = render.render_phantom("forearm", "clean", 5, index)
        mask = render.radius_mask("forearm", 5, index)
        assert np.all(mask <= phantom.mask) and 0 < mask.sum() < phantom.mask.sum()
        m = cv2.moments(mask, binaryImage=True)
        principal = math.degrees(0.5 * math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
        dx, dy = phantom.radius_axis[2:] - phantom.radius_axis[:2]
        from_axis = math.degrees(math.atan2(dy, dx))
        # Counterclockwise as displayed (y down): the distal direction turns from (0, -1).
        theta = math.radians(phantom.rotation_deg)
        from_rotation = math.degrees(math.atan2(-math.cos(theta), -math.sin(theta)))
        for a, b in ((principal, from_axis), (from_rotation, from_axis)):
            assert abs((a - b + 90) % 180 - 90) < 2.0
        assert dy < 0  # distal end towards the top of the image


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"body_part": "leg"}, ["'leg'", "forearm", "wrist"]),
        ({"style": "photo"}, ["'photo'", "clean", "radiograph"]),
        ({"body_part": "wrist", "abnormal": True}, ["forearm"]),
        ({"radial_inclination_deg": 60.0}, ["60", "40"]),
        ({"image_size": 8}, ["16"]),
    ],
)
def test_bad_arguments_name_the_allowed_values(kwargs, words):
    arguments = {"body_part": "forearm", "style": "clean", "seed": 0, "index": 0, **kwargs}
    with pytest.raises(ValueError) as error:
        render.render_phantom(**arguments)
    for word in words:
        assert word in str(error.value)
    if "style" not in kwargs:
        arguments.pop("style")
        with pytest.raises(ValueError):
            render.radius_mask(**arguments)


def test_small_phantoms_are_the_256_px_phantom_area_averaged():
    """A 64-px phantom is what a 4× coarser detector would see of the 256-px one: each pixel
    the mean of a 4×4 block, bone where bone covers at least half of it, the same geometry."""
    assert render.supersampling(64) == 4 and render.supersampling(96) == 3
    assert render.supersampling(256) == render.supersampling(512) == 1
    for index in range(3):
        fine = render.render_phantom("forearm", "radiograph", 4, index, 256)
        coarse = render.render_phantom("forearm", "radiograph", 4, index, 64)
        blocks = fine.image.astype(np.float32).reshape(64, 4, 64, 4).mean((1, 3))
        assert np.abs(coarse.image.astype(np.float32) - blocks).max() <= 0.5 + 1e-3
        coverage = fine.mask.astype(np.float32).reshape(64, 4, 64, 4).mean((1, 3))
        # The 256-px mask is itself point-sampled: coverage differs only along bone edges.
        assert np.mean(coarse.mask != (coverage >= 0.5)) < 0.01
        np.testing.assert_allclose(
            coarse.radius_axis, (fine.radius_axis + 0.5) / 4 - 0.5, atol=1e-4
        )
        assert coarse.label == fine.label
        assert coarse.radial_inclination_deg == fine.radial_inclination_deg
