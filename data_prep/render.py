"""Phantom forearm and wrist radiographs without Mathematica (thesis eq. 2-3, DATA_NOTES).

A parallel beam crosses analytic bones whose cross-sections are ellipses, so every ray's path
length through a shape is closed-form (2c·sqrt(1 − ρ²)); nothing is voxelised, and each shape is
evaluated only on its own bounding window. The image is Beer–Lambert, I = I0·exp(−Σ μ_k L_k),
and the mask is exact: 1 where some bone has a positive path length.

Limb coordinates are centimetres: u across the limb (the ulna at +u before mirroring), v along it
(distal = +v), origin at the centre of the radius' articular surface.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import cv2
import numpy as np

from data_prep import errors

BODY_PARTS = ("forearm", "wrist")
STYLES = ("clean", "radiograph")

# Linear attenuation near 40 keV, per cm (DATA_NOTES: forearm technique ≈ 55 kVp).
MU_CORTICAL, MU_MARROW, MU_SOFT_TISSUE, MU_FAT = 1.19, 0.23, 0.26, 0.22
# Cancellous bone in the epiphyses attenuates more than the marrow it replaces.
MU_TRABECULAR = 0.35
INCLINATION_RANGE_DEG = (15.0, 30.0)  # drawn when not given
INCLINATION_LIMITS_DEG = (5.0, 40.0)  # accepted when given (tests go past the natural range)
MAX_ROTATION_DEG = 20.0  # thesis: in-plane rotations within ±20°
_CLEAN_GAIN = 1.8  # bone density → brightness of the clean (AnatomyPlot3D-like) style
RENDER_GRID = 256  # smaller images are rendered this fine and area-averaged (supersampling)
GAP_FRACTION = (0.05, 0.25)  # removed segment's length, as a fraction of the bone's
GAP_CENTRE = (0.3, 0.65)  # where its centre lies, as a fraction of the bone from proximal
GAP_ANGLE_DEG = 40.0  # its edges lie within ±this of square to the bone

# Bone profiles: (s, half-width, cortex fraction of the half-width, spongy weight), with s in cm
# from the proximal end, or back from the distal reference when negative (radius: the articular
# centre; ulna: its tip). Half-widths are for an average adult and scale with the limb's width.
_RADIUS = [(0, 0.95, 0.1, 1), (1.5, 1.0, 0.12, 1), (3, 0.6, 0.3, 0.4), (4.5, 0.7, 0.35, 0)]
_RADIUS += [(8, 0.62, 0.4, 0), (-6, 0.68, 0.3, 0), (-4, 0.82, 0.22, 0.3), (-2.7, 1.1, 0.15, 1)]
_RADIUS += [(-1.7, 1.4, 0.12, 1)]  # full distal width, kept past the articular surface
_ULNA = [(0, 1.0, 0.1, 1), (2.5, 1.2, 0.12, 1), (4.5, 0.95, 0.2, 0.5), (7, 0.65, 0.35, 0)]
_ULNA += [(-3, 0.5, 0.35, 0), (-1, 0.75, 0.12, 1)]
# Carpals, in cm for an average hand. Proximal row: (u, half-axes, angle°, half-depth), placed a
# joint space above the articular line. Distal row: (u, v above the lunate, half-axes, angle°).
_PROXIMAL_ROW = [(-1.05, 0.6, 1.1, -35, 0.65), (0.4, 0.72, 0.65, 0, 0.8), (1.7, 0.6, 0.55, 10, 0.6)]
_DISTAL_ROW = [(-1.75, 1.8, 0.65, 0.7, 25), (-0.6, 2.0, 0.5, 0.62, 10), (0.45, 1.85, 0.6, 1.1, 0)]
_DISTAL_ROW += [(1.65, 1.75, 0.65, 1.0, -15)]
# Rays, thumb first: base (u, v above the lunate), angle° towards +u, bone lengths in cm.
_RAYS = [(-2.05, 2.3, -38, (4.4, 3.0, 2.3)), (-0.65, 2.95, -7, (6.8, 3.9, 2.3, 1.7))]
_RAYS += [(0.4, 3.1, 0, (6.5, 4.4, 2.7, 1.9)), (1.35, 2.95, 7, (5.8, 4.1, 2.5, 1.8))]
_RAYS += [(2.15, 2.7, 15, (5.3, 3.3, 1.8, 1.6))]
# (base, shaft, head) half-widths of metacarpal, proximal, middle and distal phalanx.
_FINGER = [(0.55, 0.4, 0.5), (0.5, 0.36, 0.42), (0.42, 0.3, 0.36), (0.36, 0.22, 0.3)]
_THUMB = [(0.6, 0.45, 0.55), (0.5, 0.38, 0.44), (0.4, 0.24, 0.32)]


class _Tube(NamedTuple):
    """A straight shape whose cross-section at distance s along its axis is an ellipse."""

    start: tuple[float, float]  # proximal end of the axis (u, v)
    end: tuple[float, float]
    profile: np.ndarray  # (n, 4) float32 knots: s, half-width, cortex fraction, spongy weight
    depth_ratio: float  # half-depth along the beam / half-width
    caps: tuple[float, float] = (0.3, 0.3)  # lengths of the rounded (elliptical) ends
    cuts: tuple = ()  # (nu, nv, d): only nu·u + nv·v <= d is kept
    gaps: tuple = ()  # (nu, nv, d, half): removed where |nu·u + nv·v − d| < half


class _Ellipsoid(NamedTuple):
    """An ellipsoid with one principal axis along the beam (a carpal bone)."""

    center: tuple[float, float]
    half: tuple[float, float]  # in-plane half-axes before turning by `angle`
    angle: float  # radians
    depth: float  # half-axis along the beam
    cortex: float = 0.15


class _Frame(NamedTuple):
    """Similarity map limb (u, v) → pixel (x, y): mirror, scale, rotate, shift."""

    cx: float
    cy: float
    scale: float  # pixels per cm
    angle: float  # radians, counterclockwise as displayed (as cv2.getRotationMatrix2D)
    mirror: float  # +1: ulna to the right of the radius before rotation (a right hand, PA)

    def to_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Pixel (x, y) of limb points (..., 2)."""
        sx, sy = self.mirror * uv[..., 0] * self.scale, -uv[..., 1] * self.scale
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + c * sx + s * sy, self.cy - s * sx + c * sy], axis=-1)

    def to_limb(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Limb u and v (float32) of every pixel centre in a window."""
        dx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] - np.float32(self.cx)
        dy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] - np.float32(self.cy)
        c, s, k = math.cos(self.angle), math.sin(self.angle), 1.0 / self.scale
        return (self.mirror * k) * (c * dx - s * dy), -k * (s * dx + c * dy)


class _Limb(NamedTuple):
    bones: list  # bones[0] is the radius
    soft: list  # soft-tissue sleeves at unit width, without a fat layer yet
    frame: _Frame
    label: int
    inclination_deg: float
    rotation_deg: float
    radius_ends: np.ndarray  # (2, 2) limb coordinates: proximal end, articular centre


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One rendered phantom with its exact bone mask and the geometry it was drawn with."""

    image: np.ndarray  # uint8 (S, S), one grayscale channel
    mask: np.ndarray  # uint8 (S, S) in {0, 1}: 1 exactly where some bone has positive path length
    label: int  # 0 normal, 1 abnormal (a removed bone segment, thesis 3.1.2); wrists are always 0
    radial_inclination_deg: float  # articular surface vs the perpendicular of the radius axis
    radius_axis: np.ndarray  # float32 (4,) = (x_prox, y_prox, x_dist, y_dist), pixels
    rotation_deg: float  # in-plane rotation of the whole limb, counterclockwise as displayed


def _knots(rows, length: float = 0.0, width: float = 1.0) -> np.ndarray:
    """Profile knots as float32, negative positions counted back from `length`."""
    knots = np.array(rows, np.float32) * np.float32([1, width, 1, 1])
    knots[:, 0] = np.where(knots[:, 0] < 0, length + knots[:, 0], knots[:, 0])
    return knots


def _corners(shape: _Tube | _Ellipsoid) -> np.ndarray:
    """Four limb-space points whose bounding box holds the whole shape."""
    if isinstance(shape, _Ellipsoid):
        r = max(shape.half)
        return np.asarray(shape.center) + np.array([[-r, -r], [-r, r], [r, -r], [r, r]])
    start, end = np.asarray(shape.start), np.asarray(shape.end)
    axis = (end - start) / np.linalg.norm(end - start)
    side = np.array([-axis[1], axis[0]]) * float(shape.profile[:, 1].max())
    return np.stack([start + side, start - side, end + side, end - side])


def _paths(shape: _Tube | _Ellipsoid, frame: _Frame, size: int):
    """(window, outer path, inner path, spongy-weighted inner path) in cm, or None if off-image."""
    px = frame.to_pixels(_corners(shape))
    x0, y0 = np.maximum(np.floor(px.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(px.max(0)).astype(int) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return None
    window = (slice(y0, y1), slice(x0, x1))
    u, v = frame.to_limb(*window)
    keep = True
    if isinstance(shape, _Tube):
        (su, sv), (eu, ev) = shape.start, shape.end
        length = math.hypot(eu - su, ev - sv)
        au, av = (eu - su) / length, (ev - sv) / length
        s = (u - su) * au + (v - sv) * av
        w = (v - sv) * au - (u - su) * av
        knots = shape.profile
        # Elliptical caps: half-width and depth shrink to zero at both ends of the axis.
        c0, c1 = shape.caps
        cap = np.clip(1 - np.square(np.maximum(c0 - s, 0) / c0), 0, 1)
        cap *= np.clip(1 - np.square(np.maximum(s - (length - c1), 0) / c1), 0, 1)
        half = np.interp(s, knots[:, 0], knots[:, 1]).astype(np.float32) * np.sqrt(cap)
        rho2 = np.square(w) / (np.square(half) + 1e-12)
        depth = shape.depth_ratio * half
        inner = 1 - np.interp(s, knots[:, 0], knots[:, 2]).astype(np.float32)
        spongy = np.interp(s, knots[:, 0], knots[:, 3]).astype(np.float32)
        for nu, nv, d in shape.cuts:
            keep = keep & (nu * u + nv * v <= d)
        for nu, nv, d, gap in shape.gaps:
            keep = keep & (np.abs(nu * u + nv * v - d) >= gap)
    else:
        c, s = math.cos(shape.angle), math.sin(shape.angle)
        du, dv = u - shape.center[0], v - shape.center[1]
        a, b = shape.half
        rho2 = np.square((c * du + s * dv) / a) + np.square((c * dv - s * du) / b)
        depth, inner, spongy = shape.depth, 1 - shape.cortex, 1.0
    # The medullary cavity is the same ellipse shrunk by `inner`: its ρ² is rho2 / inner².
    outer = 2 * depth * np.sqrt(np.maximum(1 - rho2, 0)) * keep
    inner_path = 2 * depth * inner * np.sqrt(np.maximum(1 - rho2 / np.square(inner), 0)) * keep
    return window, outer, inner_path, inner_path * spongy


def _project(shapes: list, frame: _Frame, size: int, combine=np.add) -> list[np.ndarray]:
    """Outer, inner and spongy path-length images of `shapes`, added (or np.maximum'ed)."""
    totals = [np.zeros((size, size), np.float32) for _ in range(3)]
    for shape in shapes:
        hit = _paths(shape, frame, size)
        if hit is not None:
            for total, part in zip(totals, hit[1:], strict=True):
                combine(total[hit[0]], part, out=total[hit[0]])
    return totals


def _forearm_bones(rng: np.random.Generator, width: float, length: float, tan_incl: float):
    """Radius (cut by the inclined articular surface) and ulna, as tapered cortical tubes."""
    # The tube always reaches past the steepest allowed surface, so the inclination never moves
    # the framing: the same (seed, index) gives the same limb at any inclination.
    over = 1.4 * width * math.tan(math.radians(INCLINATION_LIMITS_DEG[1])) + 0.3
    norm = math.hypot(tan_incl, 1)
    radius = _Tube(
        (0.0, -length),
        (0.0, over),
        _knots(_RADIUS, length, width),
        depth_ratio=0.8,
        caps=(0.4, 0.3),
        # Keep tan·u + v <= 0: the radial styloid (−u, away from the ulna) is more distal.
        cuts=((tan_incl / norm, 1 / norm, 0.0),),
    )
    olecranon, variance = rng.uniform(1.5, 2.5), rng.uniform(0.3, 0.8)
    # Radial head + the ulna's widest part is 2.2·width: the margin keeps the bones apart, so a
    # removed segment always splits the mask into more components.
    ulna_u = width * 2.65 + rng.uniform(0.0, 0.4)
    ulna_len = length + olecranon - variance
    ulna = _Tube(
        (ulna_u, -length - olecranon),
        (ulna_u, -variance),
        _knots(_ULNA, ulna_len, width),
        depth_ratio=0.9,
        caps=(1.0, 0.7),
    )
    return [radius, ulna], ulna_u


def _sleeve(start, end, halves, depth_ratio, caps) -> _Tube:
    """A soft-tissue tube with half-widths (s, half) and no fat layer yet."""
    return _Tube(start, end, _knots([(s, h, 0, 0) for s, h in halves]), depth_ratio, caps)


def _hand(rng: np.random.Generator, width: float, tan_incl: float, ulna_u: float):
    """Carpals, metacarpals and phalanges of a hand pointing up (+v), thumb on the −u side."""
    hs, spread = width * rng.uniform(0.92, 1.08), rng.uniform(0.8, 1.3)
    bones, soft = [], []
    for u, a, b, angle, depth in _PROXIMAL_ROW:
        r = math.radians(angle)
        v = -tan_incl * u * hs + (0.25 + math.hypot(a * math.sin(r), b * math.cos(r))) * hs
        bones.append(_Ellipsoid((u * hs, v), (a * hs, b * hs), r, depth * hs))
    lunate_v, triquetrum = bones[1].center[1], bones[2].center
    pisiform = (triquetrum[0] + 0.25 * hs, triquetrum[1] + 0.3 * hs)
    bones.append(_Ellipsoid(pisiform, (0.4 * hs, 0.45 * hs), 0.0, 0.45 * hs))
    for u, dv, a, b, angle in _DISTAL_ROW:
        center = (u * hs, lunate_v + dv * hs)
        bones.append(_Ellipsoid(center, (a * hs, b * hs), math.radians(angle), 0.7 * hs))
    for ray, (u, dv, angle, lengths) in enumerate(_RAYS):
        turn = math.radians(angle * spread + rng.uniform(-3, 3))
        direction = np.array([math.sin(turn), math.cos(turn)])
        base = point = np.array([u * hs, lunate_v + dv * hs])
        # The thumb has no middle phalanx; its sleeve covers the whole ray, a finger's starts at
        # the metacarpal head.
        halves = _THUMB if ray == 0 else _FINGER
        for k, (bone_len, widths) in enumerate(zip(lengths, halves, strict=True)):
            (base_w, shaft_w, head_w), bl = widths, bone_len * hs
            end = point + direction * bl
            knots = [(0, base_w, 0.15, 1), (0.25 * bl, shaft_w, 0.3, 0.3)]
            knots += [(0.75 * bl, shaft_w, 0.3, 0.3), (bl, head_w, 0.15, 1)]
            bones.append(_Tube(tuple(point), tuple(end), _knots(knots, 0, hs), 0.9, (0.25, 0.3)))
            base = end if ray > 0 and k == 0 else base
            point = end + direction * 0.18 * hs  # joint space
        half = (1.2 if ray == 0 else 0.85) * hs
        tip = point + direction * 0.15 * hs
        soft.append(_sleeve(tuple(base), tuple(tip), [(0, half)], 0.85, (0.8, 0.8)))
    palm = [(0, 3.1 * hs), (4 * hs, 3.8 * hs), (9.5 * hs, 4 * hs)]
    start, end = (0.6 * hs, lunate_v), (0.95 * hs, lunate_v + 9.5 * hs)
    soft.append(_sleeve(start, end, palm, 0.42, (1.0, 1.8)))
    # Forearm sleeve tapering into the palm over a long cap, so the wrist shows no step.
    top = lunate_v + 4.5 * hs
    halves = [(0, 4.2 * width), (25, 3.0 * width), (30 + top, 3.3 * width)]
    soft.append(_sleeve((ulna_u / 2, -30.0), (ulna_u / 2 + 0.3, top), halves, 0.6, (0.5, 4.0)))
    return bones, soft


def _fit_frame(rng, shapes, size, angle, mirror, target_scale, margin=0.03) -> _Frame:
    """Largest scale up to `target_scale` that keeps `shapes` inside, at a random shift."""
    corners = np.concatenate([_corners(shape) for shape in shapes])
    unit = _Frame(0.0, 0.0, 1.0, angle, mirror).to_pixels(corners)
    lo, hi = unit.min(0), unit.max(0)
    usable = size * (1 - 2 * margin)
    scale = min(target_scale, usable / float((hi - lo).max()))
    shift = rng.uniform(-0.5, 0.5, 2) * (usable - scale * (hi - lo))
    cx, cy = (size - 1) / 2 + shift - scale * (lo + hi) / 2
    return _Frame(float(cx), float(cy), float(scale), angle, mirror)


def supersampling(image_size: int) -> int:
    """Fine-grid factor: images smaller than RENDER_GRID are rendered on a grid of at least
    RENDER_GRID pixels and area-averaged down, as a detector pixel integrates over its area.

    Point-sampling a 64-pixel image instead aliases the 1-pixel cortices into dashed lines that
    look like breaks, and leaves the per-pixel photon noise of a 4× finer detector. With an
    integer factor, a 64- or 128-pixel phantom is exactly the 256-pixel one averaged over
    4×4 or 2×2 blocks.
    """
    return max(1, -(-RENDER_GRID // image_size))


def _area_average(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over each factor×factor block (float32): the fine grid → the output grid."""
    if image.shape[0] == size:
        return image.astype(np.float32)
    return cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def _coverage_mask(fine: np.ndarray, size: int) -> np.ndarray:
    """uint8 {0, 1}: 1 where bone covers at least half of the output pixel."""
    return (_area_average(fine, size) >= 0.5).astype(np.uint8)


def _draw_limb(body_part, seed, index, size, abnormal, inclination_deg, factor=1) -> _Limb:
    """Geometry only. Every draw happens whatever the overrides, so overrides keep the limb."""
    rng = np.random.default_rng([seed, index, BODY_PARTS.index(body_part), 0])
    drawn_abnormal = bool(rng.random() < 0.5) and body_part == "forearm"
    drawn_inclination = rng.uniform(*INCLINATION_RANGE_DEG)
    rotation_deg = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    mirror = float(rng.choice([-1.0, 1.0]))
    width, length = rng.uniform(0.85, 1.15), rng.uniform(22.0, 25.0)
    fracture = rng.random(5)
    label = int(drawn_abnormal if abnormal is None else abnormal)
    incl = float(drawn_inclination if inclination_deg is None else inclination_deg)
    tan_incl = math.tan(math.radians(incl))
    bones, ulna_u = _forearm_bones(rng, width, length, tan_incl)
    angle = math.radians(rotation_deg)
    if body_part == "forearm":
        halves = [(0, 4.6), (length / 2 + 4, 4.2), (length + 5, 3.1), (length + 14, 3.8)]
        halves = [(s, h * width) for s, h in halves]
        soft = [_sleeve((ulna_u / 2, -length - 8), (ulna_u / 2, 6.0), halves, 0.7, (1.0, 2.0))]
        target = rng.uniform(0.75, 0.9) * size / length  # the radius spans 75-90 % of the height
        frame = _fit_frame(rng, bones, size, angle, mirror, target)
    else:
        hand, soft = _hand(rng, width, tan_incl, ulna_u)
        bones += hand
        # Frame from the distal forearm up to between the proximal phalanges and the fingertips.
        low, top = rng.uniform(4.0, 8.0), rng.uniform(11.0, 20.0)
        box = _sleeve((-1.0, -low), (-1.0, top), [(0, 5.0)], 1.0, (1.0, 1.0))
        frame = _fit_frame(rng, [box], size, angle, mirror, np.inf)
    if label:
        # Removed segment (thesis 3.1.2: varying thickness, position and angle): a band 5-25 %
        # of the bone long, centred 30-65 % of the way up the bone, across the radius, the ulna
        # or both; at least 2.5 output pixels wide so that even an 8-connected mask is split.
        # Narrower bands hid the abnormality at 64 px from a classifier trained on thousands of
        # radiograph-style images; both fragments stay long enough to find the bone's axis.
        which = (0,) if fracture[0] < 0.4 else (1,) if fracture[0] < 0.8 else (0, 1)
        phi = math.radians(GAP_ANGLE_DEG * (2 * fracture[3] - 1))
        nu, nv = -math.sin(phi), math.cos(phi)
        lo, hi = GAP_FRACTION
        half = max((lo + (hi - lo) * fracture[4]) / 2 * length, 1.25 * factor / frame.scale)
        for k in which:
            (su, sv), (eu, ev) = bones[k].start, bones[k].end
            t = GAP_CENTRE[0] + (GAP_CENTRE[1] - GAP_CENTRE[0]) * fracture[1 + k]
            d = nu * (su + t * (eu - su)) + nv * (sv + t * (ev - sv))
            bones[k] = bones[k]._replace(gaps=((nu, nv, d, half),))
    ends = np.array([[0.0, -length], [0.0, 0.0]])
    return _Limb(bones, soft, frame, label, incl, rotation_deg, ends)


def _check(body_part, style, image_size, inclination_deg, abnormal) -> None:
    """Reject bad arguments, naming the allowed values."""
    if body_part not in BODY_PARTS:
        raise errors.InputError(f"body_part must be one of {BODY_PARTS}, got {body_part!r}")
    if style not in STYLES:
        raise errors.InputError(f"style must be one of {STYLES}, got {style!r}")
    if image_size < 16:
        raise errors.InputError(f"image_size must be at least 16, got {image_size}")
    lo, hi = INCLINATION_LIMITS_DEG
    if inclination_deg is not None and not lo <= inclination_deg <= hi:
        raise errors.InputError(
            f"radial_inclination_deg must lie in [{lo}, {hi}], got {inclination_deg}"
        )
    if abnormal and body_part == "wrist":
        raise errors.InputError(
            f"abnormal=True needs body_part 'forearm' of {BODY_PARTS}; wrists are 0"
        )


def radius_mask(
    body_part: str,
    seed: int,
    index: int,
    image_size: int = 256,
    radial_inclination_deg: float | None = None,
    abnormal: bool | None = None,
) -> np.ndarray:
    """Binary mask of the radius alone, for the same limb render_phantom draws."""
    _check(body_part, STYLES[0], image_size, radial_inclination_deg, abnormal)
    factor = supersampling(image_size)
    grid = image_size * factor
    limb = _draw_limb(body_part, seed, index, grid, abnormal, radial_inclination_deg, factor)
    return _coverage_mask(_project(limb.bones[:1], limb.frame, grid)[0] > 0, image_size)


def _radiograph(rng, bone, soft, size, marker) -> np.ndarray:
    """Soft tissue, scatter, blur, photon noise, windowing, collimation and a side marker."""
    outer, inner, spongy = bone
    fat = soft[0] - soft[1]
    muscle = np.maximum(soft[1] - outer, 0)  # the bones displace the tissue around them
    # Faint trabecular mottling: uniform noise blurred below a pixel's worth, about ±25 %.
    texture = cv2.GaussianBlur(rng.random((size, size), np.float32) - 0.5, (0, 0), 0.8)
    density = MU_CORTICAL * (outer - inner) + MU_MARROW * inner + MU_SOFT_TISSUE * muscle
    density += MU_TRABECULAR * spongy * (1 + 2.4 * texture) + MU_FAT * fat
    primary = np.exp(-density)
    # Scatter: a low-pass haze of the primary (computed small: it has no detail anyway).
    small = cv2.resize(primary, (max(size // 8, 4),) * 2, interpolation=cv2.INTER_AREA)
    haze = cv2.resize(cv2.GaussianBlur(small, (0, 0), 2.5), (size, size))
    scatter = rng.uniform(0.05, 0.35)
    psf = rng.uniform(0.4, 1.2) * size / 256
    intensity = cv2.GaussianBlur((1 - scatter) * primary + scatter * haze, (0, 0), psf)
    # Photon noise with Poisson's mean and variance; the normal approximation is 5x cheaper than
    # rng.poisson and indistinguishable at these counts (>= 10 photons even behind bone).
    photons = np.float32(math.exp(rng.uniform(math.log(300), math.log(5000))))
    expected = intensity * photons
    counts = expected + np.sqrt(expected) * rng.standard_normal((size, size), np.float32)
    # Log-domain display, as detectors do, so bone is bright and the open field dark.
    shown = -np.log(np.maximum(counts, 0.5) / photons)
    top = float(np.percentile(density[::4, ::4], 99.5))
    lo, hi = rng.uniform(-0.15, 0.1), top * rng.uniform(0.85, 1.2)
    image = np.clip((shown - lo) / (hi - lo), 0, 1) ** rng.uniform(0.7, 1.4)
    # Collimation: uniform strips on 0-4 sides, never over bone (the mask stays the truth).
    rows, cols = np.flatnonzero(outer.any(1)), np.flatnonzero(outer.any(0))
    room = [rows[0], size - 1 - rows[-1], cols[0], size - 1 - cols[-1]] if rows.size else [0] * 4
    shade = rng.uniform(0.75, 0.95) if rng.random() < 0.6 else rng.uniform(0.0, 0.1)
    used, widths = rng.random(4) < 0.4, rng.uniform(0.02, 0.12, 4) * size
    for side in range(4):
        strip = int(min(widths[side], room[side] - 1)) if used[side] else 0
        if strip > 0:
            image[[np.s_[:strip], np.s_[-strip:], np.s_[:, :strip], np.s_[:, -strip:]][side]] = (
                shade
            )
    image = np.round(image * 255).astype(np.uint8)  # OpenCV 5 draws text on 8-bit images only
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, size / 256 * rng.uniform(0.6, 1.0)
    thick = max(1, round(2 * size / 256))
    (text_w, text_h), _ = cv2.getTextSize(marker, font, scale, thick)
    pad, corner = int(0.05 * size), rng.integers(4)
    x = pad if corner % 2 == 0 else size - pad - text_w
    y = pad + text_h if corner < 2 else size - pad
    cv2.putText(image, marker, (x, y), font, scale, 255, thick)
    return image


def render_phantom(
    body_part: str,
    style: str,
    seed: int,
    index: int,
    image_size: int = 256,
    abnormal: bool | None = None,
    radial_inclination_deg: float | None = None,
) -> Phantom:
    """Render one phantom, fully determined by (body_part, style, seed, index, image_size)."""
    _check(body_part, style, image_size, radial_inclination_deg, abnormal)
    factor = supersampling(image_size)
    grid = image_size * factor
    limb = _draw_limb(body_part, seed, index, grid, abnormal, radial_inclination_deg, factor)
    bone = _project(limb.bones, limb.frame, grid)
    mask = _coverage_mask(bone[0] > 0, image_size)
    if style == "clean":
        density = MU_CORTICAL * (bone[0] - bone[1]) + MU_MARROW * bone[1] + MU_TRABECULAR * bone[2]
        image = _area_average((1 - np.exp(-_CLEAN_GAIN * density)) * 255, image_size)
        image = np.round(image).astype(np.uint8)
        # The faintest bone edge must stay visible so that mask == (image > 0) exactly.
        image = np.where(mask > 0, np.maximum(image, 1), 0).astype(np.uint8)
    else:
        # Style draws come from their own stream, so clean and radiograph share the limb.
        rng = np.random.default_rng([seed, index, BODY_PARTS.index(body_part), 1])
        width, fat = rng.uniform(0.9, 1.25), rng.uniform(0.08, 0.2)
        soft = [
            s._replace(profile=s.profile * [1, width, 0, 0] + [0, 0, fat, 0]) for s in limb.soft
        ]
        soft_paths = _project(soft, limb.frame, grid, np.maximum)[:2]
        marker = "R" if limb.frame.mirror > 0 else "L"
        image = _radiograph(rng, bone, soft_paths, grid, marker)
        image = np.round(_area_average(image, image_size)).astype(np.uint8)
    # Pixel centres of the fine grid → the output grid: x_out = (x_grid + ½) / factor − ½.
    axis = (limb.frame.to_pixels(limb.radius_ends).reshape(4) + 0.5) / factor - 0.5
    axis = axis.astype(np.float32)
    return Phantom(image, mask, limb.label, limb.inclination_deg, axis, limb.rotation_deg)
