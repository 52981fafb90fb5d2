"""Radial inclination from bone masks: known angles on rendered phantoms, landmarks, bad masks.

At 256 px the distal radius is only ~25 px wide, so a binary mask fixes the articular line to
about ±2° in the worst pixel alignments (a nearly horizontal edge crossing one pixel row). Every
case within 1° is therefore out of reach; the tests hold the mean error to ≤ 1° and the largest
to ≤ 2° on a fixed set of phantoms, as the issue allows (over 1,000 phantoms per body part the
mean is ≈ 0.25° and 99 % are within 1.4°).
"""

import math

import cv2
import numpy as np
import pytest

from data_prep import render
from xrayjax.evaluators import geometry

ANGLES = (15.0, 18.0, 21.0, 24.0, 27.0, 30.0)


def _phantoms(body_part, seed, num, size=256, angles=ANGLES):
    return [
        render.render_phantom(body_part, "clean", seed, i, size, None, angles[i % len(angles)])
        for i in range(num)
    ]


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_known_angles_on_rendered_phantoms(body_part):
    phantoms = _phantoms(body_part, seed=21, num=36)
    errors = np.array(
        [geometry.radial_inclination_deg(p.mask) - p.radial_inclination_deg for p in phantoms]
    )
    # The set covers both mirrorings, rotations across ±20° and (forearms) broken bones.
    rotations = [p.rotation_deg for p in phantoms]
    assert max(rotations) > 15 and min(rotations) < -15
    if body_part == "forearm":
        assert {p.label for p in phantoms} == {0, 1}
    assert np.abs(errors).mean() <= 1.0, errors
    assert np.abs(errors).max() <= 2.0, errors
    assert (np.abs(errors) <= 1.0).mean() >= 0.9, errors


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_mirrored_mask_gives_the_same_angle(body_part):
    for p in _phantoms(body_part, seed=4, num=6):
        mirrored = geometry.radial_inclination_deg(np.fliplr(p.mask))
        assert mirrored == pytest.approx(geometry.radial_inclination_deg(p.mask), abs=0.05)


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_angles_past_the_natural_range(body_part):
    angles = (8.0, 10.0, 12.0, 33.0, 36.0, 38.0)
    for p in _phantoms(body_part, seed=22, num=6, angles=angles):
        measured = geometry.radial_inclination_deg(p.mask)
        assert measured == pytest.approx(p.radial_inclination_deg, abs=2.0)


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_limb_turned_up_to_30_degrees(body_part):
    # The renderer turns limbs within ±20°; another ±10° by rotating a 768 px mask and
    # shrinking it (pixel coverage > ½) keeps the mask an honest digitisation.
    errors = []
    for index in range(8):
        p = render.render_phantom(body_part, "clean", 23, index, 768)
        turn = 10.0 if index % 2 else -10.0
        rotation = cv2.getRotationMatrix2D((383.5, 383.5), turn, 1.0)
        turned = cv2.warpAffine(p.mask.astype(np.float32), rotation, (768, 768))
        small = (cv2.resize(turned, (256, 256), interpolation=cv2.INTER_AREA) > 0.5).astype(
            np.uint8
        )
        errors.append(geometry.radial_inclination_deg(small) - p.radial_inclination_deg)
    assert np.abs(errors).mean() <= 1.0, errors
    assert np.abs(errors).max() <= 4.0, errors


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_landmarks_axis_and_sides(body_part):
    for p in _phantoms(body_part, seed=5, num=6):
        m = geometry.measure_radius(p.mask)
        assert m.ulna_found
        # The axis runs along the rendered radius and ends at its articular centre.
        truth = p.radius_axis.astype(np.float64)
        direction = (truth[2:] - truth[:2]) / np.linalg.norm(truth[2:] - truth[:2])
        measured = (m.axis[2:] - m.axis[:2]) / np.linalg.norm(m.axis[2:] - m.axis[:2])
        assert math.degrees(math.acos(min(1.0, measured @ direction))) < 0.5
        assert np.linalg.norm(m.axis[2:] - truth[2:]) < 2.0
        # Styloid tip: more distal than the ulnar corner, on the side away from the ulna.
        assert (m.styloid_xy - m.ulnar_corner_xy) @ direction > 0
        # Styloid to corner spans the distal radius: 2.8 cm ≈ 20-50 px at 256 px.
        assert 15 < np.linalg.norm(m.styloid_xy - m.ulnar_corner_xy) < 60


def test_styloid_is_on_the_side_away_from_the_ulna():
    for index in range(6):
        p = render.render_phantom("forearm", "clean", 6, index, 256)
        m = geometry.measure_radius(p.mask)
        only_radius = render.radius_mask("forearm", 6, index, 256)
        ys, xs = np.nonzero(p.mask & (1 - only_radius))
        ulna_centre = np.array([xs.mean(), ys.mean()])
        to_ulna = np.linalg.norm(
            [m.styloid_xy - ulna_centre, m.ulnar_corner_xy - ulna_centre], axis=1
        )
        assert to_ulna[0] > to_ulna[1]


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_radius_alone(body_part):
    for index in range(6):
        p = render.render_phantom(body_part, "clean", 24, index, 256)
        m = geometry.measure_radius(render.radius_mask(body_part, 24, index, 256))
        assert not m.ulna_found
        assert m.inclination_deg == pytest.approx(p.radial_inclination_deg, abs=1.5)


def test_broken_forearms():
    errors = []
    for index in range(10):
        p = render.render_phantom("forearm", "clean", 8, index, 256, abnormal=True)
        errors.append(geometry.radial_inclination_deg(p.mask) - p.radial_inclination_deg)
    assert np.abs(errors).mean() <= 1.0 and np.abs(errors).max() <= 2.0, errors


def test_bad_masks_raise_with_a_reason():
    empty = np.zeros((64, 64), np.uint8)
    with pytest.raises(ValueError, match="empty"):
        geometry.radial_inclination_deg(empty)
    with pytest.raises(ValueError, match="2-D"):
        geometry.radial_inclination_deg(np.ones((64, 64, 3), np.uint8))
    blob = np.zeros((256, 256), np.uint8)
    cv2.circle(blob, (128, 128), 40, 1, -1)
    with pytest.raises(ValueError, match="radius"):
        geometry.radial_inclination_deg(blob)
    bar = np.zeros((256, 256), np.uint8)
    bar[40:220, 110:130] = 1  # long but never flaring: no distal radius
    with pytest.raises(ValueError, match="flare"):
        geometry.radial_inclination_deg(bar)
    speck = np.zeros((256, 256), np.uint8)
    speck[10, 10] = 1
    with pytest.raises(ValueError, match="no bone"):
        geometry.radial_inclination_deg(speck)
    # A forearm lying across the image is not a PA view with the distal end up.
    lying = np.rot90(render.render_phantom("forearm", "clean", 0, 1, 256).mask).copy()
    with pytest.raises(ValueError):
        geometry.radial_inclination_deg(lying)


def test_inclination_errors_records_failures():
    good = render.render_phantom("forearm", "clean", 2, 0, 256)
    report = geometry.inclination_errors(
        [good.mask, np.zeros((256, 256), np.uint8)], [good.radial_inclination_deg, 20.0]
    )
    assert report["num_measured"] == 1 and report["indices"] == [0]
    assert report["num_failures"] == 1
    assert report["failures"][0]["index"] == 1 and "empty" in report["failures"][0]["reason"]
    nothing = geometry.inclination_errors([np.zeros((8, 8))], [20.0])
    assert math.isnan(nothing["mae_deg"]) and nothing["num_failures"] == 1


@pytest.mark.parametrize("body_part", render.BODY_PARTS)
def test_known_angles_within_one_degree_at_512_px(body_part):
    # At 256 px a near-horizontal articular line leaves ~4° of slope that the pixels cannot
    # resolve (see above); at 512 px every known angle is recovered within 1°.
    phantoms = _phantoms(body_part, seed=31, num=12, size=512)
    errors = [geometry.radial_inclination_deg(p.mask) - p.radial_inclination_deg for p in phantoms]
    assert max(abs(e) for e in errors) <= 1.0, errors
