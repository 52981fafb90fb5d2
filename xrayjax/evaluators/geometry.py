"""Radial inclination measured on a binary bone mask in PA view (thesis sec. 2.4, 5.2 future work).

Clinical definition (DATA_NOTES): the angle between the line from the radial styloid tip to the
ulnar corner of the distal radius articular surface, and the perpendicular to the radius long
axis; normal ≈ 22° (21-25°). The mask may hold the radius alone, radius and ulna (forearm), or
radius, ulna, carpals and the hand (wrist). The distal end points towards the top of the image
(within about ±30°); the limb may be mirrored.

How it is measured:
1. Bones. Connected components (8-connected) of the mask, ignoring specks; bones touching
   through a thin neck (the styloid and the scaphoid, at 256 px) are parted by an erosion
   whose cores share out the pixels. The forearm bones are the two substantial pieces reaching
   furthest down the image (the hand lies above them). A bone split by a removed segment
   continues in a collinear piece just distal to it (see `_continues` for the tests that keep
   carpals and metacarpals out); the chain's most distal piece carries the articular surface.
   Of the two forearm bones the radius has the wider distal end (≈ 2.8 cm against ≈ 1.5 cm).
   When the radius found looks fused with its neighbours (its distal chords not filled, or the
   end far wider than a radius flares), the bones are parted again with stronger erosions.
2. Long axis. The midline: midpoints of the chords perpendicular to the current axis, one per
   pixel-thick slice below the articular region, fitted by a line (outliers trimmed), refined
   three times. Slices cut by the image border, or within one bone width of a bone end that is
   not the image border, are left out.
3. Articular surface. In the axis frame, the most distal pixel of each pixel-wide strip across
   the distal end (1 px in from either edge). A binary mask fixes a straight edge only up to
   the lines passing between those pixels and the outside pixels just beyond them; the line in
   the middle of that range of slopes is taken, which bounds the quantisation error by half
   the range. When no line separates them (the rounded, rough edge of a predicted mask), a
   least-squares line over the central 60 % of the strips, outliers trimmed. At 256 px the
   distal radius is only ~25 px wide: a line through two single pixels would be off by up to
   ~2°; this is off by about a quarter of a degree on average (phantom masks).
4. Landmarks and sign. The styloid tip and the ulnar corner are the surface line's points at
   the radius' radial and ulnar edges; the radial side is the one away from the ulna. The
   inclination is the angle of the line through them to the axis' perpendicular, positive when
   the styloid tip is more distal (always, in normal anatomy). Without an ulna the more distal
   corner is taken as the styloid, so the angle is never negative.

A mask that does not show a measurable distal radius raises ValueError saying why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

# Components smaller than this fraction of the largest are specks, not bones.
MIN_COMPONENT_FRACTION = 0.05
MIN_COMPONENT_PIXELS = 20
# Median fraction of a chord that a single bone fills (several bones side by side fill less).
MIN_FILL = 0.85
# Erosions (3×3) that part touching bones, per 128 px of image side: at 256 px a neck up to
# 4 px wide breaks (bones and joint spaces scale with the image).
SPLIT_EROSION_PER_128_PX = 1
# The distal radius is ~1.7-2.2× as wide as its shaft; a bone flaring less is not a radius.
MIN_FLARE = 1.3
# Strips this close to the radius' edges stay out of the articular-surface fit (the corners).
SURFACE_MARGIN_PX = 1.0
# A surface edge that no straight line separates (a smooth or noisy predicted mask) has rounded
# corners: its least-squares line uses only this central fraction of the strips.
ROUGH_SURFACE_SPAN = 0.6
# A removed segment (abnormal forearm) may span up to this many shaft widths: its two pieces
# still count as one bone (phantom gaps reach 25 % of the bone, ≈ 5 shaft widths).
MAX_GAP_WIDTHS = 6.0
# Ground-truth phantoms flare 1.8-2.5×; far more means carpals fused onto the radius.
MAX_FLARE = 3.5
# When the radius looks fused with its neighbours, up to this many more erosions part the bones;
# a result counts when one erosion more gives the same angle within STABLE_DEG.
EXTRA_SPLITS = 3
STABLE_DEG = 1.0


class RadiusMeasurement(NamedTuple):
    """Radial inclination and the landmarks it was measured from (pixel x, y)."""

    inclination_deg: float
    axis: np.ndarray  # float64 (4,) = (x_prox, y_prox, x_dist, y_dist): shaft end → surface centre
    styloid_xy: np.ndarray  # float64 (2,): radial styloid tip
    ulnar_corner_xy: np.ndarray  # float64 (2,): ulnar corner of the articular surface
    ulna_found: bool  # False: radius alone, styloid taken as the more distal corner


class _Piece(NamedTuple):
    """One connected component, as pixel centres (N, 2) in (x, y)."""

    points: np.ndarray
    bottom: float  # largest y: how far down the image the component reaches
    touches_border: np.ndarray  # (N,) bool: pixel on the image's outermost rows/columns


def _binary_mask(mask: Any) -> np.ndarray:
    """A 2-D uint8 {0, 1} mask, or ValueError naming what is wrong."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {array.shape}")
    if array.size == 0 or not np.any(array > 0):
        raise ValueError("mask is empty: no bone pixel to measure")
    return (array > 0).astype(np.uint8)


def _split_touching(bone: np.ndarray, erosions: int) -> np.ndarray:
    """Component labels, with bones that touch through a thin neck told apart.

    At 256 px the radial styloid can touch the scaphoid by a pixel or two. Cores are what
    survives an erosion; a component holding several cores is shared out, each pixel joining
    its nearest core. Labels are int64; components with one core or none keep theirs.
    """
    count, labels = cv2.connectedComponents(bone, connectivity=8)
    core = cv2.erode(bone, np.ones((3, 3), np.uint8), iterations=erosions)
    core_count, core_labels = cv2.connectedComponents(core, connectivity=8)
    labels = labels.astype(np.int64)
    if core_count <= 2:
        return labels
    # Component of each core, and how many cores each component holds.
    core_of = np.zeros(core_count, np.int64)
    core_of[core_labels[core > 0]] = labels[core > 0]
    cores_in = np.bincount(core_of[1:], minlength=count)
    # Distance to the nearest core pixel, with that pixel's index (DIST_LABEL_PIXEL: 1, 2, ...).
    _, nearest = cv2.distanceTransformWithLabels(
        (core == 0).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    lookup = np.zeros(int(nearest.max()) + 1, np.int64)
    lookup[nearest[core > 0]] = core_labels[core > 0]
    owner = lookup[nearest]  # the core each pixel is closest to
    shared = (labels > 0) & (cores_in[labels] >= 2) & (core_of[owner] == labels)
    # Ids above `count` keep the cores' new components apart from the old ones.
    return np.where(shared, count + owner, labels)


def _pieces(bone: np.ndarray, erosions: int) -> list[_Piece]:
    """Substantial components (touching bones split), reaching furthest down the image first."""
    labels = _split_touching(bone, erosions)
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    order = np.argsort(ids, kind="stable")
    ys, xs, ids = ys[order], xs[order], ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    areas = np.diff(np.r_[starts, ids.size])
    keep = max(MIN_COMPONENT_PIXELS, MIN_COMPONENT_FRACTION * areas.max())
    h, w = bone.shape
    pieces = []
    for begin, area in zip(starts, areas, strict=True):
        if area < keep:
            continue
        x, y = xs[begin : begin + area], ys[begin : begin + area]
        border = (x == 0) | (y == 0) | (x == w - 1) | (y == h - 1)
        points = np.stack([x, y], axis=1).astype(np.float64)
        pieces.append(_Piece(points, float(y.max()), border))
    return sorted(pieces, key=lambda p: -p.bottom)


class _Frame(NamedTuple):
    """Axis frame: origin on the axis, `along` towards the distal end, `across` 90° from it."""

    origin: np.ndarray
    along: np.ndarray
    across: np.ndarray

    def coords(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = points - self.origin
        return rel @ self.along, rel @ self.across

    def to_xy(self, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
        return self.origin + np.multiply.outer(a, self.along) + np.multiply.outer(c, self.across)


def _principal_frame(points: np.ndarray) -> _Frame:
    """Centroid and principal axis, oriented towards the top of the image."""
    centre = points.mean(axis=0)
    cov = np.cov((points - centre).T)
    _, vectors = np.linalg.eigh(cov)
    along = vectors[:, -1]
    if along[1] > 0:  # image y grows downwards; distal is up
        along = -along
    return _Frame(centre, along, np.array([-along[1], along[0]]))


class _Slices(NamedTuple):
    """Pixel-thick slices across a piece: position along the axis, chord ends across it."""

    a: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cut: np.ndarray  # bool: a chord end lies on the image border
    fill: np.ndarray  # pixels in the slice / chord length: ≈ 1 across one solid bone


def _slices(piece: _Piece, frame: _Frame) -> _Slices:
    a, c = frame.coords(piece.points)
    bins = np.round(a).astype(np.int64)
    first = bins.min()
    n = bins.max() - first + 1
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, bins - first, c)
    np.maximum.at(hi, bins - first, c)
    # A chord is cut by the border when the pixel at either of its ends lies on the border.
    lo_cut = np.zeros(n, bool)
    hi_cut = np.zeros(n, bool)
    at_lo = c <= lo[bins - first] + 1.0
    at_hi = c >= hi[bins - first] - 1.0
    np.logical_or.at(lo_cut, bins[at_lo] - first, piece.touches_border[at_lo])
    np.logical_or.at(hi_cut, bins[at_hi] - first, piece.touches_border[at_hi])
    filled = np.isfinite(lo)
    positions = np.arange(first, first + n, dtype=np.float64)
    fill = np.bincount(bins - first, minlength=n) / np.where(filled, hi - lo + 1.0, 1.0)
    return _Slices(
        positions[filled], lo[filled], hi[filled], (lo_cut | hi_cut)[filled], fill[filled]
    )


def _width_stats(slices: _Slices, keep: np.ndarray) -> np.ndarray:
    return (slices.hi - slices.lo + 1.0)[keep & ~slices.cut]


def _shaft_width(s: _Slices) -> float:
    """Narrow chord width of a piece (20th percentile), its ends and border cuts left out."""
    widths = s.hi - s.lo + 1.0
    end = float(np.median(widths))
    inner = _width_stats(s, (s.a > s.a.min() + end) & (s.a < s.a.max() - end))
    if inner.size == 0:
        inner = _width_stats(s, np.ones(s.a.size, bool))
    return float(np.percentile(inner, 20)) if inner.size else end


def _axis_frame(piece: _Piece) -> _Frame:
    """A piece's own long axis: principal axis refined by the midline of its chords."""
    frame = _principal_frame(piece.points)
    for _ in range(2):
        try:
            frame = _fit_midline([piece], frame, None)[0]
        except ValueError:
            break
    return frame


def _continues(last: _Piece, other: _Piece, frames: dict, pieces: list[_Piece]) -> bool:
    """Whether `other` is the distal part of the bone `last` belongs to, past a removed segment.

    Judged in the longer piece's frame, with w that piece's shaft width (both are the better
    known on the longer piece). Both are single bones (each chord about filled: a cluster of
    hand bones is not); `other` starts within 1.5·w past `last`'s end, is longer than wide, and
    its chords are centred on the same line; `last` does not widen into its distal end (a joint:
    the bone is whole); both are about as wide next to the gap (a carpal is too short to have a
    chord there, a metacarpal too narrow). A distal piece may be all metaphysis and a proximal
    one all radial head, hence the generous width ratio. A gap wider than 1.5·w must be an
    empty corridor: no other bone lies between the two pieces (carpals do, past a whole ulna).
    """
    # Cheap first look in the principal frame: far off `last`'s line or end, it is not its part.
    if -id(last) not in frames:
        frames[-id(last)] = _principal_frame(last.points)
    rough = frames[-id(last)]
    a, c = rough.coords(last.points)
    other_a, other_c = rough.coords(other.points)
    reach = float(np.ptp(c))  # about the widest chord
    if not (other_a.mean() > a.max() and other_a.min() < a.max() + MAX_GAP_WIDTHS * reach):
        return False
    if abs(other_c.mean()) > reach:
        return False
    for piece in (last, other):
        if id(piece) not in frames:
            frames[id(piece)] = _axis_frame(piece)
    own, theirs = frames[id(last)], frames[id(other)]
    a, other_a = own.coords(last.points)[0], own.coords(other.points)[0]
    last_is_longer = np.ptp(a) >= np.ptp(other_a)
    longer = own if last_is_longer else theirs
    s, t = _slices(last, longer), _slices(other, longer)
    if t.a.mean() <= s.a.max() or min(np.median(s.fill), np.median(t.fill)) < MIN_FILL:
        return False  # not distal, or one is a cluster of bones side by side (a hand)
    w = _shaft_width(s if last_is_longer else t)
    top, start = s.a.max(), t.a.min()
    if start > top + MAX_GAP_WIDTHS * w:
        return False
    if start > top + 1.5 * w:
        for piece in pieces:
            if piece is last or piece is other:
                continue
            a_p, c_p = longer.coords(piece.points)
            if np.any((a_p > top) & (a_p < start) & (np.abs(c_p) < 1.5 * w)):
                return False
    shorter = t if np.ptp(t.a) <= np.ptp(s.a) else s
    middles = np.abs(shorter.lo + shorter.hi)[~shorter.cut] / 2
    if middles.size == 0 or np.median(middles) > 0.3 * w:
        return False
    below = _width_stats(s, (s.a > top - 1.5 * w) & (s.a < top - 0.9 * w))
    above = _width_stats(t, (t.a > start + 0.9 * w) & (t.a < start + 1.5 * w))
    if below.size == 0 or above.size == 0:
        return False
    # A piece that widens towards its distal end ends in a joint: the bone is whole. (A proximal
    # fragment may be all radial head: wide, but no wider at its distal end.)
    lower = _width_stats(s, (s.a > top - 3.5 * w) & (s.a < top - 2.2 * w))
    widening = lower.size == 0 or np.median(below) > 1.3 * np.median(lower)
    if np.median(below) > 1.5 * w and widening:
        return False
    other_widths = _width_stats(t, np.ones(t.a.size, bool))
    elongated = np.ptp(t.a) >= 1.2 * other_widths.max()
    return elongated and 0.6 < float(np.median(above) / np.median(below)) < 1.7


def _chain(seed: _Piece, others: list[_Piece], frames: dict[int, _Frame]) -> list[_Piece]:
    """The seed and the pieces continuing it distally (a bone split by a removed segment)."""
    chain: list[_Piece] = [seed]
    while True:
        unused = [p for p in others if not any(p is q for q in chain)]
        following = [p for p in unused if _continues(chain[-1], p, frames, others)]
        if not following:
            return chain
        chain.append(following[0])


def _distal_width(piece: _Piece, frame: _Frame) -> float:
    """Widest chord over the distal 30 % of a piece."""
    s = _slices(piece, frame)
    widths = _width_stats(s, s.a >= s.a.max() - 0.3 * np.ptp(s.a))
    return float(widths.max()) if widths.size else 0.0


def _fit_midline(
    chain: list[_Piece], frame: _Frame, distal_limit: float | None
) -> tuple[_Frame, np.ndarray, np.ndarray]:
    """Refit the axis through shaft chord midpoints; returns the frame and the widths used."""
    positions, middles, widths = [], [], []
    for k, piece in enumerate(chain):
        s = _slices(piece, frame)
        width = np.median(s.hi - s.lo + 1.0)
        keep = ~s.cut
        # A bone end that is not the image border is rounded or cut: its chords are not centred.
        if not s.cut[: max(1, int(width))].any():
            keep &= s.a > s.a.min() + width
        if k == len(chain) - 1 and distal_limit is not None:
            keep &= s.a < distal_limit
        else:
            keep &= s.a < s.a.max() - width
        positions.append(s.a[keep])
        middles.append((s.lo[keep] + s.hi[keep]) / 2)
        widths.append((s.hi - s.lo + 1.0)[keep])
    a, m, w = (np.concatenate(x) for x in (positions, middles, widths))
    if a.size < 8:
        raise ValueError(
            f"no measurable radius: the candidate bone shows too little shaft ({a.size} px "
            "below its distal end) to fix its long axis"
        )
    used = np.ones(a.size, bool)
    for _ in range(3):
        slope, offset = np.polyfit(a[used], m[used], 1)
        residual = np.abs(m - (offset + slope * a))
        scale = max(0.75, 3.0 * float(np.median(residual[used])))
        used = residual <= scale
    along = frame.along + slope * frame.across
    along /= np.linalg.norm(along)
    origin = frame.origin + offset * frame.across
    return _Frame(origin, along, np.array([-along[1], along[0]])), a[used], w[used]


def _separating_line(c_in, a_in, c_out, a_out) -> tuple[float, float, bool]:
    """Line a = α + β·c through the middle of all lines that separate inside from outside pixels.

    A binary mask fixes a straight edge only up to the set of lines passing between its pixel
    centres and those of the outside pixels beyond it; the slope in the middle of that set's
    range is wrong by at most half the range. Returns (α, β, found), found False when no line
    separates them (a curved or noisy edge).
    """
    angles = np.radians(np.arange(-60.0, 60.0, 0.02))
    slopes = np.tan(angles)[:, None]
    low = np.max(a_in[None] - slopes * c_in[None], axis=1)
    high = np.min(a_out[None] - slopes * c_out[None], axis=1)
    feasible = np.flatnonzero(high > low)
    if feasible.size == 0:
        return math.nan, math.nan, False
    k = (feasible[0] + feasible[-1]) // 2
    return float(low[k] + high[k]) / 2, float(slopes[k, 0]), True


class _Surface(NamedTuple):
    """The articular surface a = offset + slope·c in the axis frame, and how well it was seen."""

    offset: float
    slope: float
    c_lo: float  # the radius' edges across the axis at its distal end
    c_hi: float
    width: float  # widest chord of the distal end
    fill: float  # median fill of the distal end's chords: ≈ 1 for one solid bone


def _surface(piece: _Piece, frame: _Frame, shape: tuple[int, int]) -> _Surface:
    """Fit the articular surface of the radius' distal piece (module docstring, step 3)."""
    a, c = frame.coords(piece.points)
    width = _distal_width(piece, frame)
    band = a >= a.max() - width
    s = _slices(piece, frame)
    fill = float(np.median(s.fill[s.a >= a.max() - width]))
    c_lo, c_hi = c[band].min(), c[band].max()
    middle, half = (c_lo + c_hi) / 2, (c_hi - c_lo) / 2 - SURFACE_MARGIN_PX
    central = np.flatnonzero(band & (np.abs(c - middle) <= half))
    # The most distal pixel of each pixel-wide strip along the axis lies on the surface.
    bins = np.round(c[central]).astype(np.int64)
    order = np.lexsort((a[central], bins))
    last = np.r_[bins[order][1:] != bins[order][:-1], True] if bins.size else bins.astype(bool)
    top = central[order[last]]
    if top.size < 4:
        raise ValueError("the distal end of the radius is too narrow to fit its articular surface")
    # Drop strips whose top is off the line (a notch where a touching carpal was cut away).
    keep = np.ones(top.size, bool)
    for _ in range(3):
        slope, offset = np.polyfit(c[top][keep], a[top][keep], 1)
        residual = np.abs(a[top] - offset - slope * c[top])
        keep = residual <= max(1.0, 3.0 * float(np.median(residual[keep])))
    top = top[keep]
    # Their 4-neighbours on the distal side, outside the piece, lie beyond the surface.
    xs, ys = piece.points[:, 0].astype(np.int64), piece.points[:, 1].astype(np.int64)
    solid = np.zeros((shape[0] + 2, shape[1] + 2), bool)
    solid[ys + 1, xs + 1] = True
    outside = []
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        if dx * frame.along[0] + dy * frame.along[1] > 0:
            nx, ny = xs[top] + dx, ys[top] + dy
            outside.append(np.stack([nx, ny], 1)[~solid[ny + 1, nx + 1]])
    out_a, out_c = frame.coords(np.concatenate(outside).astype(np.float64))
    separated = _separating_line(c[top], a[top], out_c, out_a)
    if separated[2]:  # a straight digital edge
        offset, slope = separated[:2]
    else:  # a rough edge: least squares away from its rounded corners
        inner = np.abs(c[top] - middle) <= ROUGH_SURFACE_SPAN * (c_hi - c_lo) / 2
        if inner.sum() >= 4:
            slope, offset = np.polyfit(c[top][inner], a[top][inner], 1)
    return _Surface(float(offset), float(slope), float(c_lo), float(c_hi), width, fill)


def measure_radius(mask: np.ndarray) -> RadiusMeasurement:
    """Find the radius in a PA bone mask and measure its radial inclination (module docstring).

    Returns the angle with its landmarks; raises ValueError saying why when the mask is empty,
    not 2-D, or shows no measurable distal radius. Bones are first parted with one 3×3 erosion
    per 128 px of image side. If the radius then looks fused with its neighbours (its distal
    end not one solid bone, or far too wide), stronger partings are tried, up to EXTRA_SPLITS
    more erosions; as a harder parting also cuts bones apart where it should not, one counts
    only if one erosion more gives the same angle (within STABLE_DEG).
    """
    bone = _binary_mask(mask)
    base = max(1, round(SPLIT_EROSION_PER_128_PX * min(bone.shape) / 128))
    try:
        return _measure(bone, base)
    except _Fused as error:
        fused = error
    # One measurement (or None when unmeasurable) per erosion count, from base + 1 on.
    tries: list[RadiusMeasurement | None] = []
    for erosions in range(base + 1, base + EXTRA_SPLITS + 2):
        try:
            tries.append(_measure(bone, erosions))
        except ValueError:
            tries.append(None)
        if len(tries) >= 2 and tries[-2] is not None and tries[-1] is not None:
            if abs(tries[-2].inclination_deg - tries[-1].inclination_deg) <= STABLE_DEG:
                return tries[-2]
    raise ValueError(f"{fused}; parting the bones harder gave no stable measurement") from None


class _Fused(ValueError):
    """The radius found is not one clean bone: parting the bones harder may help."""


def _measure(bone: np.ndarray, erosions: int) -> RadiusMeasurement:
    """measure_radius with bones parted by `erosions` 3×3 erosions."""
    pieces = _pieces(bone, erosions)
    if not pieces:
        raise ValueError(f"no bone of at least {MIN_COMPONENT_PIXELS} connected pixels")
    frames: dict[int, _Frame] = {}  # by id(piece): axis frames; by -id(piece): principal frames
    first = _chain(pieces[0], pieces, frames)
    rest = [p for p in pieces if not any(p is q for q in first)]
    chains = [first]
    top_y = min(float(p.points[:, 1].min()) for p in first)
    forearm = [p for p in rest if p.bottom > (top_y + pieces[0].bottom) / 2]
    if forearm:
        chains.append(_chain(forearm[0], rest, frames))
    rough = [_principal_frame(np.concatenate([p.points for p in ch])) for ch in chains]
    distal = [_distal_width(ch[-1], f) for ch, f in zip(chains, rough, strict=True)]
    k = int(np.argmax(distal))
    radius, frame = chains[k], rough[k]
    ulna = chains[1 - k] if len(chains) == 2 else None
    tilt = math.degrees(math.acos(float(np.clip(-frame.along[1], -1, 1))))
    if tilt > 45:
        raise ValueError(
            f"the radius points {tilt:.0f}° away from the top of the image; expected its distal "
            "end within about ±30° of up"
        )
    tip = radius[-1]
    a_top = frame.coords(tip.points)[0].max()
    frame, _, widths = _fit_midline(radius, frame, a_top - distal[k])
    for _ in range(2):
        a_top = frame.coords(tip.points)[0].max()
        frame, _, widths = _fit_midline(radius, frame, a_top - _distal_width(tip, frame))
    surface = _surface(tip, frame, bone.shape)
    offset, slope, c_lo, c_hi, width = surface[:5]
    flare = width / float(np.percentile(widths, 10))
    if surface.fill < MIN_FILL:
        raise _Fused(
            f"the distal radius is not one solid bone (its chords are {surface.fill:.0%} filled): "
            "it seems fused with neighbouring bones"
        )
    if flare > MAX_FLARE:
        raise _Fused(
            f"the distal radius is {flare:.1f}× as wide as its shaft (a radius flares about 2×): "
            "it seems fused with carpal bones"
        )
    if flare < MIN_FLARE:
        raise ValueError(
            f"no radius found: the best candidate's distal end is only {flare:.2f}× as wide as "
            f"its shaft (a distal radius flares ≥ {MIN_FLARE}×)"
        )
    if ulna is not None:
        ulna_c = frame.coords(np.concatenate([p.points for p in ulna]))[1].mean()
        styloid_c, corner_c = (c_lo, c_hi) if ulna_c > 0 else (c_hi, c_lo)
    else:
        styloid_c, corner_c = (c_lo, c_hi) if slope * (c_lo - c_hi) > 0 else (c_hi, c_lo)
    rise = slope * (styloid_c - corner_c)
    inclination = math.degrees(math.atan2(rise, abs(styloid_c - corner_c)))
    a_prox = min(float(frame.coords(p.points)[0].min()) for p in radius)
    axis = np.concatenate([frame.to_xy(a_prox, 0.0), frame.to_xy(offset, 0.0)])
    return RadiusMeasurement(
        inclination_deg=inclination,
        axis=axis,
        styloid_xy=frame.to_xy(offset + slope * styloid_c, styloid_c),
        ulnar_corner_xy=frame.to_xy(offset + slope * corner_c, corner_c),
        ulna_found=ulna is not None,
    )


def radial_inclination_deg(mask: np.ndarray) -> float:
    """Radial inclination in degrees of a 2-D PA bone mask (> 0 is bone); ValueError if not."""
    return measure_radius(mask).inclination_deg


def inclination_errors(masks: Sequence[Any], true_deg: Sequence[float]) -> dict[str, Any]:
    """Measure every mask against its true inclination: errors, their summary, and failures.

    Keys: mae_deg, bias_deg (mean signed error), std_deg (of the signed errors),
    median_abs_error_deg, max_abs_error_deg (NaN when nothing was measured), errors_deg
    (measured − true), measured_deg, true_deg and indices for each measured mask, num_measured,
    num_failures, failures (a list of {"index", "reason"} for masks that raised ValueError).
    """
    if len(masks) != len(true_deg):
        raise ValueError(f"{len(masks)} masks but {len(true_deg)} true inclinations")
    indices, measured, truth, failures = [], [], [], []
    for index, (mask, expected) in enumerate(zip(masks, true_deg, strict=True)):
        try:
            value = radial_inclination_deg(mask)
        except ValueError as error:
            failures.append({"index": index, "reason": str(error)})
            continue
        indices.append(index)
        measured.append(value)
        truth.append(float(expected))
    errors = np.asarray(measured) - np.asarray(truth)
    magnitude = np.abs(errors)

    def stat(fn: Any, values: np.ndarray) -> float:
        return float(fn(values)) if values.size else math.nan

    return {
        "mae_deg": stat(np.mean, magnitude),
        "bias_deg": stat(np.mean, errors),
        "std_deg": stat(np.std, errors),
        "median_abs_error_deg": stat(np.median, magnitude),
        "max_abs_error_deg": stat(np.max, magnitude),
        "errors_deg": errors.tolist(),
        "measured_deg": measured,
        "true_deg": truth,
        "indices": indices,
        "num_measured": len(indices),
        "num_failures": len(failures),
        "failures": failures,
    }
