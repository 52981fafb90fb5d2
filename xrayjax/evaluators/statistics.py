"""Summary statistics shared by every report: mean and standard deviation of finite values."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def mean_std(values: Iterable[float | None], ddof: int = 0) -> tuple[float, float]:
    """(mean, std) of the finite values, None and NaN skipped; NaN where undefined (no values,
    or no more than `ddof` of them for the std). ddof=0: population std; 1: sample std."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=ddof)) if finite.size > ddof else math.nan
    return mean, std
