"""The phantom dataset command: splits, features, masks and errors."""

import numpy as np
import tensorflow_datasets as tfds

from data_prep import builder, phantom, render


def _records(data_dir, name, split):
    source = tfds.builder_from_directory(str(builder.dataset_dir(data_dir, name))).as_data_source(
        split=split
    )
    return [source[i] for i in range(len(source))]


def test_phantom_dataset_matches_renderer(tmp_path):
    args = [
        "--body-part",
        "forearm",
        "--style",
        "clean",
        "--num",
        "6",
        "--num-test",
        "2",
        "--seed",
        "7",
        "--image-size",
        "64",
        "--data-dir",
        str(tmp_path),
    ]
    assert builder.run_cli(phantom.main, args) == 0
    train = _records(tmp_path, "phantom_forearm_clean", "train")
    test = _records(tmp_path, "phantom_forearm_clean", "test")
    assert sorted(r["render_index"] for r in train) == list(range(6))
    assert sorted(r["render_index"] for r in test) == [6, 7]
    for record in train + test:
        expected = render.render_phantom(
            "forearm", "clean", 7, int(record["render_index"]), image_size=64
        )
        np.testing.assert_array_equal(record["image"][:, :, 0], expected.image)
        np.testing.assert_array_equal(record["mask"][:, :, 0], expected.mask)
        assert record["label"] == expected.label
        np.testing.assert_allclose(record["radius_axis"], expected.radius_axis, rtol=1e-6)
        assert abs(record["radial_inclination_deg"] - expected.radial_inclination_deg) < 1e-4
        # Clean renders: bone exactly where the mask is.
        np.testing.assert_array_equal(record["mask"] > 0, record["image"] > 0)


def test_phantom_errors(tmp_path, capsys):
    bad_part = ["--body-part", "knee", "--style", "clean", "--data-dir", str(tmp_path)]
    assert builder.run_cli(phantom.main, bad_part) == 2
    assert "forearm, wrist" in capsys.readouterr().err
    bad_style = ["--body-part", "wrist", "--style", "sketch", "--data-dir", str(tmp_path)]
    assert builder.run_cli(phantom.main, bad_style) == 2
    assert "clean, radiograph" in capsys.readouterr().err
    assert builder.run_cli(phantom.main, ["--preset", "huge", "--data-dir", str(tmp_path)]) == 2
    assert "demo" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
