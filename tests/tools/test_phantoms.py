"""The radial-inclination measurement on rendered phantoms against their true angles."""

import numpy as np
import pytest

from data_prep import render
from xrayjax.tools import phantoms


def test_evaluate_on_phantoms_report():
    report = phantoms.evaluate_on_phantoms("wrist", num=8, seed=3, image_size=256)
    assert report["body_part"] == "wrist" and report["num"] == 8
    assert report["num_measured"] == 8 and report["num_failures"] == 0
    assert len(report["errors_deg"]) == len(report["measured_deg"]) == 8
    assert report["mae_deg"] == pytest.approx(np.abs(report["errors_deg"]).mean())
    assert report["mae_deg"] <= 1.0
    expected = [
        render.render_phantom("wrist", "clean", 3, i, 256).radial_inclination_deg for i in range(8)
    ]
    np.testing.assert_allclose(report["true_deg"], expected)
