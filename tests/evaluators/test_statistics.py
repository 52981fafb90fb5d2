"""mean_std: the one summary every report uses."""

import math

import numpy as np
import pytest

from xrayjax.evaluators import statistics


def test_mean_std_skips_undefined_values_and_honours_ddof():
    values = [1.0, None, 3.0, math.nan, 5.0]
    assert statistics.mean_std(values) == pytest.approx((3.0, np.std([1, 3, 5])))
    assert statistics.mean_std(values, ddof=1) == pytest.approx((3.0, 2.0))
    mean, std = statistics.mean_std([4.0], ddof=1)  # one run: a mean, but no sample std
    assert mean == 4.0 and math.isnan(std)
    assert all(math.isnan(v) for v in statistics.mean_std([]))
    assert all(math.isnan(v) for v in statistics.mean_std([None, math.inf]))
