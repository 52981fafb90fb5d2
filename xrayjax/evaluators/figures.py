"""Figures of translation, segmentation and radial-inclination results: image grids and overlays
drawn with OpenCV, charts with matplotlib.

- translation_grid: source | translated rows (thesis figs. 34-35).
- segmentation_grid: natural image | predicted mask over it, ground-truth outline and Dice per
  tile where known (figs. 39-41).
- error_histogram: signed radial-inclination errors (measured − true).
- radial_inclination_overlay: one image with the radius axis, its perpendicular, the styloid
  tip, the ulnar corner and the angle.
- mask_overlay: one image with a predicted mask's outline and, when measured, the radius.
- convergence_chart: train and test accuracy per epoch, from metrics.jsonl (figs. 36-38).

Images are uint8 or float in [−1, 1], (H, W) or (H, W, 1). Masks are binary, of any dtype, with
nonzero = bone (threshold generator outputs with segmentation.binarize first).
Tiles smaller than 128 px are enlarged by a whole factor (nearest neighbour) so text stays
legible. Grids and overlays are returned as uint8 BGR images; charts (error_histogram,
convergence_chart) as matplotlib Figures, so their data can be read back, and `chart_image`
draws one. The caller writes images (with `xrayjax.logging.save_png`, which writes whole
files, locally or on gs://).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xrayjax.data import transforms
from xrayjax.evaluators import segmentation
from xrayjax.evaluators.geometry import RadiusMeasurement

PAD = 2  # pixels between and around tiles
HEADER = 22  # pixels above the first row, for column titles
MIN_TILE = 128  # smaller tiles are enlarged by a whole factor
MASK_COLOR = (0, 140, 255)  # BGR orange: predicted bone
TRUTH_COLOR = (0, 255, 0)  # BGR green: ground-truth outline
AXIS_COLOR = (255, 200, 0)  # BGR light blue
PERPENDICULAR_COLOR = (200, 200, 200)
SURFACE_COLOR = (0, 0, 255)  # red: styloid tip to ulnar corner
STYLOID_COLOR = (255, 255, 0)  # cyan
CORNER_COLOR = (255, 0, 255)  # magenta
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _gray(image: Any) -> np.ndarray:
    """One uint8 channel (H, W) from uint8, bool/{0, 1} masks, or float in [−1, 1]."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 1) image, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array.copy()
    return transforms.to_uint8(array)


def tile_scale(height: int, width: int) -> int:
    """Whole enlargement factor applied to (height, width) tiles: at least MIN_TILE px a side."""
    return max(1, math.ceil(MIN_TILE / min(height, width)))


def _enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return image
    size = (image.shape[1] * scale, image.shape[0] * scale)
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a black box, so it reads on any background."""
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = origin
    cv2.rectangle(image, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(image, text, (x, y), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _font_scale(tile_width: int) -> float:
    return max(0.35, min(0.6, tile_width / 400))


def _grid(rows: list[list[np.ndarray]], titles: Sequence[str]) -> np.ndarray:
    """BGR grid of equally sized BGR tiles, PAD apart, with column titles in a HEADER strip."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(row) for row in rows)
    grid = np.zeros((HEADER + len(rows) * (h + PAD) + PAD, cols * (w + PAD) + PAD, 3), np.uint8)
    for c, title in enumerate(titles[:cols]):
        _text(grid, str(title), (PAD + c * (w + PAD) + 4, HEADER - 6), _font_scale(w))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = HEADER + PAD + r * (h + PAD), PAD + c * (w + PAD)
            grid[y : y + h, x : x + w] = tile
    return grid


def _mask(values: Any) -> np.ndarray:
    """(H, W) bool from an (H, W) or (H, W, 1) mask of any dtype, nonzero = bone."""
    array = np.asarray(values)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 1) mask, got shape {array.shape}")
    return array != 0


def _batch(name: str, images: Any) -> list[np.ndarray]:
    """A list of uint8 (H, W) images, all the same size."""
    tiles = [_gray(image) for image in images]
    if not tiles:
        raise ValueError(f"{name} is empty")
    if any(t.shape != tiles[0].shape for t in tiles):
        raise ValueError(f"{name} differ in size: {sorted({t.shape for t in tiles})}")
    return tiles


def translation_grid(
    sources: Any,
    translated: Any,
    titles: Sequence[str] = ("source", "translated"),
) -> np.ndarray:
    """One row per image: source | translated (thesis figs. 34-35)."""
    left, right = _batch("sources", sources), _batch("translated", translated)
    if len(left) != len(right) or left[0].shape != right[0].shape:
        raise ValueError(
            f"{len(left)} sources of size {left[0].shape} but {len(right)} translated images "
            f"of size {right[0].shape}"
        )
    scale = tile_scale(*left[0].shape)
    rows = [
        [cv2.cvtColor(_enlarge(image, scale), cv2.COLOR_GRAY2BGR) for image in pair]
        for pair in zip(left, right, strict=True)
    ]
    return _grid(rows, titles)


def _overlay(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None, scale: int):
    """Enlarged BGR image with the (bool) mask tinted in and the (bool) truth's outline drawn."""
    tile = cv2.cvtColor(_enlarge(image, scale), cv2.COLOR_GRAY2BGR).astype(np.float32)
    bone = _enlarge(mask.astype(np.uint8), scale).astype(bool)
    tile[bone] = 0.55 * tile[bone] + 0.45 * np.float32(MASK_COLOR)
    tile = np.round(tile).astype(np.uint8)
    if truth is not None:
        outline = _enlarge(truth.astype(np.uint8), scale)
        contours, _ = cv2.findContours(outline, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, TRUTH_COLOR, 1)
    return tile


def segmentation_grid(
    images: Any,
    masks: Any,
    truths: Sequence[Any | None] | None = None,
    dice: Sequence[float | None] | None = None,
    titles: Sequence[str] = ("image", "segmentation"),
) -> np.ndarray:
    """Rows of image | predicted mask over it (figs. 39-41), truth outline and Dice if known.

    Dice per tile comes from `dice` when given (None/NaN entries print nothing), else from
    `truths` where a truth exists. Returns the image.
    """
    pictures = _batch("images", images)
    predicted = [_mask(mask) for mask in masks]
    if len(pictures) != len(predicted) or any(m.shape != pictures[0].shape for m in predicted):
        sizes = sorted({m.shape for m in predicted})
        raise ValueError(
            f"{len(pictures)} images of size {pictures[0].shape} but {len(predicted)} masks "
            f"of size {sizes}"
        )
    n = len(pictures)
    truth_list = [None] * n if truths is None else list(truths)
    if len(truth_list) != n or (dice is not None and len(dice) != n):
        raise ValueError(f"truths and dice need one entry per image ({n})")
    scale = tile_scale(*pictures[0].shape)
    rows = []
    for i, (image, mask) in enumerate(zip(pictures, predicted, strict=True)):
        truth = None if truth_list[i] is None else _mask(truth_list[i])
        if truth is not None and truth.shape != mask.shape:
            raise ValueError(f"image {i}: mask of the wrong size: {mask.shape} vs {truth.shape}")
        score = dice[i] if dice is not None else None
        if score is None and dice is None and truth is not None:
            score = segmentation.dice(mask, truth)
        tile = _overlay(image, mask, truth, scale)
        if score is not None and math.isfinite(score):
            font = _font_scale(tile.shape[1])
            _text(tile, f"Dice {score:.3f}", (4, tile.shape[0] - 6), font)
        rows.append([cv2.cvtColor(_enlarge(image, scale), cv2.COLOR_GRAY2BGR), tile])
    return _grid(rows, titles)


def _draw_measurement(canvas: np.ndarray, m: RadiusMeasurement, scale: float, origin) -> None:
    """Draw the axis, its perpendicular, the articular line and both landmarks on a panel.

    A point (x, y) of the original image lands at ((x, y) + 0.5 − origin) · scale − 0.5.
    """
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    line = cv2.LINE_AA

    def at(xy: Any) -> tuple[int, int]:
        x, y = (np.asarray(xy, np.float64) + 0.5 - np.asarray(origin, np.float64)) * scale - 0.5
        return round(x * 2**shift), round(y * 2**shift)

    axis = np.asarray(m.axis, np.float64)
    proximal, distal = axis[:2], axis[2:]
    direction = (distal - proximal) / max(float(np.linalg.norm(distal - proximal)), 1e-9)
    normal = np.array([-direction[1], direction[0]])
    styloid = np.asarray(m.styloid_xy, np.float64)
    corner = np.asarray(m.ulnar_corner_xy, np.float64)
    half = 0.75 * float(np.linalg.norm(styloid - corner))
    thick = max(1, round(scale / 2))
    tip = distal + 0.4 * half * direction
    cv2.line(canvas, at(proximal), at(tip), AXIS_COLOR, thick, line, shift)
    ends = (at(distal - half * normal), at(distal + half * normal))
    cv2.line(canvas, *ends, PERPENDICULAR_COLOR, thick, line, shift)
    cv2.line(canvas, at(styloid), at(corner), SURFACE_COLOR, thick, line, shift)
    radius = round(max(3.0, 1.5 * scale) * 2**shift)
    cv2.circle(canvas, at(styloid), radius, STYLOID_COLOR, thick, line, shift)
    cv2.circle(canvas, at(corner), radius, CORNER_COLOR, thick, line, shift)


def radial_inclination_overlay(image: Any, measurement: RadiusMeasurement) -> np.ndarray:
    """The image with the radius axis, styloid tip and ulnar corner drawn | a zoom on them.

    The left panel is the whole image enlarged to about 512 px; the right, as tall, zooms on the
    distal radius. A legend names the colours. Returns the image.
    """
    gray = _gray(image)
    if gray.max() <= 1:  # a {0, 1} mask
        gray = gray * np.uint8(255)
    scale = max(1, math.ceil(512 / max(gray.shape)))
    whole = cv2.cvtColor(_enlarge(gray, scale), cv2.COLOR_GRAY2BGR)
    _draw_measurement(whole, measurement, scale, (0.0, 0.0))
    # Zoom: a square around the articular surface, three surface-widths across.
    styloid = np.asarray(measurement.styloid_xy, np.float64)
    corner = np.asarray(measurement.ulnar_corner_xy, np.float64)
    centre = np.asarray(measurement.axis[2:], np.float64)
    side = max(16.0, 3.0 * float(np.linalg.norm(styloid - corner)))
    zoom_scale = whole.shape[0] / side
    origin = centre - side / 2
    to_zoom = np.array(
        [[zoom_scale, 0, -origin[0] * zoom_scale], [0, zoom_scale, -origin[1] * zoom_scale]]
    )
    # Pixel centres map as in _draw_measurement: shift by half a pixel on either side.
    to_zoom[:, 2] += 0.5 * zoom_scale - 0.5
    size = (whole.shape[0], whole.shape[0])
    zoom = cv2.warpAffine(gray, to_zoom, size, flags=cv2.INTER_NEAREST, borderValue=0)
    zoom = cv2.cvtColor(zoom, cv2.COLOR_GRAY2BGR)
    _draw_measurement(zoom, measurement, zoom_scale, origin)
    canvas = np.zeros((whole.shape[0], whole.shape[1] + PAD + zoom.shape[1], 3), np.uint8)
    canvas[:, : whole.shape[1]] = whole
    canvas[:, whole.shape[1] + PAD :] = zoom
    _text(canvas, f"radial inclination {measurement.inclination_deg:.1f} deg", (8, 24), 0.6)
    legend = [
        ("long axis", AXIS_COLOR),
        ("perpendicular", PERPENDICULAR_COLOR),
        ("articular line", SURFACE_COLOR),
        ("styloid tip", STYLOID_COLOR),
        ("ulnar corner", CORNER_COLOR),
    ]
    x0, y0 = whole.shape[1] + PAD + 8, 20
    for k, (name, color) in enumerate(legend):
        y = y0 + 20 * k
        cv2.rectangle(canvas, (x0 - 3, y - 13), (x0 + 130, y + 5), (0, 0, 0), -1)
        cv2.line(canvas, (x0, y - 4), (x0 + 18, y - 4), color, 3)
        cv2.putText(canvas, name, (x0 + 24, y), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


MASK_COLOR = (0, 200, 0)  # BGR


def mask_overlay(
    image: Any, mask: Any, measurement: RadiusMeasurement | None, caption: str
) -> np.ndarray:
    """The image with the mask's outline, the measured radius (when given) and a caption.

    Images under 512 px on their long side are enlarged by a whole factor so lines stay thin.
    """
    gray = _gray(image)
    binary = _mask(mask)
    if binary.shape != gray.shape:
        raise ValueError(f"mask {binary.shape} and image {gray.shape} differ in size")
    scale = max(1, 512 // max(gray.shape))
    canvas = cv2.cvtColor(_enlarge(gray, scale), cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(
        _enlarge(binary.astype(np.uint8), scale), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(canvas, contours, -1, MASK_COLOR, max(1, scale // 2), cv2.LINE_AA)
    if measurement is not None:
        _draw_measurement(canvas, measurement, scale, (0.0, 0.0))
    _text(canvas, caption, (8, 21), 0.55)
    return canvas


# ----- charts (matplotlib, drawn off-screen: no pyplot, no global backend) -----------------------


def _chart(size: tuple[int, int]) -> tuple[Figure, Any]:
    """A (width, height)-pixel figure with one axes, on its own Agg canvas."""
    figure = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def chart_image(figure: Figure) -> np.ndarray:
    """A chart drawn as a uint8 BGR image (H, W, 3), ready for `logging.save_png`."""
    figure.canvas.draw()
    return cv2.cvtColor(np.asarray(figure.canvas.buffer_rgba()), cv2.COLOR_RGBA2BGR)


def error_histogram(
    errors_deg: Any, bin_width: float = 0.25, size: tuple[int, int] = (640, 400)
) -> Figure:
    """A histogram of signed radial-inclination errors (measured − true, degrees), in bins of
    `bin_width` symmetric about 0; the title gives n, MAE, bias and the largest error."""
    values = np.asarray(errors_deg, np.float64).ravel()
    finite = values[np.isfinite(values)]
    span = max(2.0, math.ceil(np.abs(finite).max() / bin_width) * bin_width if finite.size else 0)
    figure, axes = _chart(size)
    axes.hist(finite, bins=np.arange(-span, span + bin_width / 2, bin_width), color="tab:blue")
    axes.axvline(0.0, color="grey", linewidth=1)
    axes.set(
        xlim=(-span, span),
        xlabel="measured − true radial inclination (degrees)",
        ylabel="images",
    )
    if finite.size:
        title = (
            f"n = {finite.size}   MAE {np.abs(finite).mean():.2f}°   bias {finite.mean():+.2f}°"
            f"   max |error| {np.abs(finite).max():.2f}°"
        )
    else:
        title = "no finite errors"
    if finite.size < values.size:
        title += f"   ({values.size - finite.size} not finite)"
    axes.set_title(title, fontsize=10)
    return figure


CONVERGENCE_SERIES = (("train/accuracy", "train", "tab:blue"), ("test/accuracy", "test", "tab:red"))


def convergence_chart(records: list[dict], size: tuple[int, int] = (640, 400)) -> Figure:
    """Train and test accuracy per epoch (the thesis's figs. 36-38) from metrics.jsonl records:
    one line per series over the records that carry an epoch and a finite value."""
    figure, axes = _chart(size)
    epochs = [r for r in records if "epoch" in r]
    for key, label, colour in CONVERGENCE_SERIES:
        points = [(r["epoch"], r[key]) for r in epochs if math.isfinite(r.get(key, math.nan))]
        if points:
            x, y = zip(*points, strict=True)
            marker = "o" if len(points) <= 60 else None
            axes.plot(x, y, color=colour, marker=marker, markersize=4, label=label)
    axes.set(xlabel="epoch", ylabel="accuracy", ylim=(0.0, 1.0))
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(loc="lower right")
    return figure
