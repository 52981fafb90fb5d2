"""The radial-inclination measurement's own reference: its error on rendered phantoms, whose
exact masks and true angles are known (the demo's geometry stage)."""

from __future__ import annotations

from typing import Any

from data_prep import render
from xrayjax.evaluators import geometry


def evaluate_on_phantoms(
    body_part: str, num: int, seed: int = 0, image_size: int = 256
) -> dict[str, Any]:
    """Inclination errors on the exact bone masks of `num` rendered phantoms (indices 0..num−1).

    Phantoms are drawn as the renderer draws them: inclinations 15-30°, rotations within ±20°,
    mirrored half the time, forearms abnormal (a removed bone segment) half the time. The result
    also names body_part, seed, image_size and num.
    """
    masks, truth = [], []
    for index in range(num):
        phantom = render.render_phantom(body_part, "clean", seed, index, image_size)
        masks.append(phantom.mask)
        truth.append(phantom.radial_inclination_deg)
    report = geometry.inclination_errors(masks, truth)
    return {"body_part": body_part, "seed": seed, "image_size": image_size, "num": num} | report
