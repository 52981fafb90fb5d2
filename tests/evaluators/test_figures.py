"""Figures: uint8 BGR images of the expected size and content."""

import cv2
import numpy as np
import pytest

from data_prep import render
from xrayjax.evaluators import figures, geometry


def _grid_size(rows, cols, tile):
    return (
        figures.HEADER + rows * (tile + figures.PAD) + figures.PAD,
        cols * (tile + figures.PAD) + figures.PAD,
    )


def test_translation_grid():
    sources = np.stack(
        [render.render_phantom("forearm", "clean", 0, i, 64).image for i in range(3)]
    )
    translated = sources[..., None] / 127.5 - 1.0  # float [−1, 1] with a channel axis
    grid = figures.translation_grid(sources, translated)
    tile = 64 * figures.tile_scale(64, 64)
    assert tile == 128
    assert grid.shape == (*_grid_size(3, 2, tile), 3) and grid.dtype == np.uint8
    # Both columns show the same pixels: the float image was mapped back to uint8 exactly.
    top = figures.HEADER + figures.PAD
    left = grid[top : top + tile, figures.PAD : figures.PAD + tile]
    right = grid[top : top + tile, 2 * figures.PAD + tile : 2 * figures.PAD + 2 * tile]
    np.testing.assert_array_equal(left, right)
    with pytest.raises(ValueError):
        figures.translation_grid(sources, translated[:2])


def test_segmentation_grid_with_truth_and_dice():
    phantoms = [render.render_phantom("wrist", "radiograph", 1, i, 256) for i in range(2)]
    images = [p.image for p in phantoms]
    masks = [np.roll(p.mask, 3, axis=1) for p in phantoms]
    grid = figures.segmentation_grid(images, masks, truths=[phantoms[0].mask, None])
    assert grid.shape == (*_grid_size(2, 2, 256), 3)
    # Explicit scores may be missing.
    again = figures.segmentation_grid(images, masks, dice=[0.5, None])
    assert again.shape == (*_grid_size(2, 2, 256), 3)
    # Float masks count nonzero pixels as bone: an all-zero mask tints nothing.
    blank = figures.segmentation_grid(images, np.zeros((2, 256, 256)))
    top = figures.HEADER + figures.PAD
    left, right = blank[top : top + 256, 2 : 2 + 256], blank[top : top + 256, 260 : 260 + 256]
    np.testing.assert_array_equal(left, right)
    with pytest.raises(ValueError, match="one entry per image"):
        figures.segmentation_grid(images, masks, truths=[None])


def test_error_histogram():
    errors = np.random.default_rng(0).normal(0, 0.4, 200)
    histogram = figures.error_histogram(np.r_[errors, np.nan])
    assert histogram.shape == (400, 640, 3)
    empty = figures.error_histogram([], size=(320, 200))
    assert empty.shape == (200, 320, 3)
    # Bars are drawn only where there are errors: the empty plot has fewer non-white pixels.
    assert (histogram < 255).sum() > (cv2.resize(empty, (640, 400)) < 255).sum()


def test_radial_inclination_overlay():
    phantom = render.render_phantom("wrist", "radiograph", 0, 3, 256)
    measurement = geometry.measure_radius(phantom.mask)
    overlay = figures.radial_inclination_overlay(phantom.image, measurement)
    # The image enlarged to 512 px, then a 512 px zoom on the distal radius beside it.
    assert overlay.shape == (512, 512 + figures.PAD + 512, 3)
    on_mask = figures.radial_inclination_overlay(phantom.mask, measurement)
    assert on_mask.shape == (512, 1026, 3)
