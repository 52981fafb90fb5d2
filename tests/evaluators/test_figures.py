"""Figures: valid PNGs of the expected size, written atomically."""

import cv2
import numpy as np
import pytest

from data_prep import render
from xrayjax.evaluators import figures, geometry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def _no_temporary_files(folder):
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _grid_size(rows, cols, tile):
    return (
        figures.HEADER + rows * (tile + figures.PAD) + figures.PAD,
        cols * (tile + figures.PAD) + figures.PAD,
    )


def test_translation_grid(tmp_path):
    sources = np.stack(
        [render.render_phantom("forearm", "clean", 0, i, 64).image for i in range(3)]
    )
    translated = sources[..., None] / 127.5 - 1.0  # float [−1, 1] with a channel axis
    path = figures.translation_grid(sources, translated, tmp_path / "new" / "translation.png")
    assert path == tmp_path / "new" / "translation.png"
    tile = 64 * figures.tile_scale(64, 64)
    assert tile == 128
    assert _read(path).shape == (*_grid_size(3, 2, tile), 3)
    _no_temporary_files(path.parent)
    with pytest.raises(ValueError):
        figures.translation_grid(sources, translated[:2], tmp_path / "bad.png")


def test_segmentation_grid_with_truth_and_dice(tmp_path):
    phantoms = [render.render_phantom("wrist", "radiograph", 1, i, 256) for i in range(2)]
    images = [p.image for p in phantoms]
    masks = [np.roll(p.mask, 3, axis=1) for p in phantoms]
    path = figures.segmentation_grid(
        images, masks, tmp_path / "seg.png", truths=[phantoms[0].mask, None]
    )
    assert _read(path).shape == (*_grid_size(2, 2, 256), 3)
    # Overwriting an existing figure works, and explicit scores may be missing.
    again = figures.segmentation_grid(images, masks, path, dice=[0.5, None])
    assert again == path and _read(path).shape == (*_grid_size(2, 2, 256), 3)
    _no_temporary_files(tmp_path)
    # Float masks count nonzero pixels as bone: an all-zero mask tints nothing.
    blank = _read(figures.segmentation_grid(images, np.zeros((2, 256, 256)), tmp_path / "b.png"))
    top = figures.HEADER + figures.PAD
    left, right = blank[top : top + 256, 2 : 2 + 256], blank[top : top + 256, 260 : 260 + 256]
    np.testing.assert_array_equal(left, right)
    with pytest.raises(ValueError, match="one entry per image"):
        figures.segmentation_grid(images, masks, tmp_path / "x.png", truths=[None])


def test_error_histogram(tmp_path):
    errors = np.random.default_rng(0).normal(0, 0.4, 200)
    path = figures.error_histogram(np.r_[errors, np.nan], tmp_path / "hist.png")
    assert _read(path).shape == (400, 640, 3)
    empty = figures.error_histogram([], tmp_path / "empty.png", size=(320, 200))
    assert _read(empty).shape == (200, 320, 3)


def test_radial_inclination_overlay(tmp_path):
    phantom = render.render_phantom("wrist", "radiograph", 0, 3, 256)
    measurement = geometry.measure_radius(phantom.mask)
    path = figures.radial_inclination_overlay(phantom.image, measurement, tmp_path / "ri.png")
    # The image enlarged to 512 px, then a 512 px zoom on the distal radius beside it.
    assert _read(path).shape == (512, 512 + figures.PAD + 512, 3)
    mask_path = figures.radial_inclination_overlay(phantom.mask, measurement, tmp_path / "m.png")
    assert _read(mask_path).shape == (512, 1026, 3)
    _no_temporary_files(tmp_path)
