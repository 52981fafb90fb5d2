"""Figures: uint8 BGR images of the expected size and content."""

import math

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


def test_error_histogram_shows_each_error_once():
    errors = np.random.default_rng(0).normal(0, 0.4, 200)
    chart = figures.error_histogram(np.r_[errors, np.nan], bin_width=0.25)
    (axes,) = chart.axes
    heights = [bar.get_height() for bar in axes.patches]
    edges = [bar.get_x() for bar in axes.patches]
    # The bars are the errors' histogram in 0.25° bins symmetric about 0, the NaN left out.
    span = max(2.0, np.ceil(np.abs(errors).max() / 0.25) * 0.25)  # at least ±2°
    expected, expected_edges = np.histogram(errors, np.arange(-span, span + 0.125, 0.25))
    np.testing.assert_array_equal(heights, expected)
    np.testing.assert_allclose(edges, expected_edges[:-1])
    title = axes.get_title()
    assert "n = 200" in title and f"MAE {np.abs(errors).mean():.2f}°" in title
    assert "(1 not finite)" in title
    image = figures.chart_image(chart)
    assert image.shape == (400, 640, 3) and image.dtype == np.uint8
    empty = figures.error_histogram([], size=(320, 200))
    assert sum(bar.get_height() for bar in empty.axes[0].patches) == 0
    assert empty.axes[0].get_title() == "no finite errors"
    assert figures.chart_image(empty).shape == (200, 320, 3)


def test_convergence_chart_plots_metrics_per_epoch():
    records = [
        {"step": 2, "train/loss": 0.7},  # a log step without an epoch: not plotted
        {"step": 4, "epoch": 1, "train/accuracy": 0.5, "test/accuracy": 0.45},
        {"step": 8, "epoch": 2, "train/accuracy": 0.75, "test/accuracy": math.nan},
        {"step": 12, "epoch": 3, "train/accuracy": 0.9, "test/accuracy": 0.8},
    ]
    (axes,) = figures.convergence_chart(records).axes
    lines = {line.get_label(): line.get_xydata().tolist() for line in axes.lines}
    assert lines == {
        "train": [[1, 0.5], [2, 0.75], [3, 0.9]],
        "test": [[1, 0.45], [3, 0.8]],  # the undefined value is a gap, not a zero
    }
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", "accuracy")


def test_radial_inclination_overlay():
    phantom = render.render_phantom("wrist", "radiograph", 0, 3, 256)
    measurement = geometry.measure_radius(phantom.mask)
    overlay = figures.radial_inclination_overlay(phantom.image, measurement)
    # The image enlarged to 512 px, then a 512 px zoom on the distal radius beside it.
    assert overlay.shape == (512, 512 + figures.PAD + 512, 3)
    on_mask = figures.radial_inclination_overlay(phantom.mask, measurement)
    assert on_mask.shape == (512, 1026, 3)
