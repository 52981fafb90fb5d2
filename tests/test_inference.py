"""Translating and segmenting with trained GANs writes complete, labelled datasets once."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import builder
from xrayjax import inference
from xrayjax.data import sources, transforms


def _records(data_dir, name):
    source = tfds.builder_from_directory(str(builder.dataset_dir(data_dir, name))).as_data_source(
        split="train"
    )
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def cyclegan(tiny_gan):
    config, workdir, _ = tiny_gan("cyclegan_forearm")
    return config, workdir


def test_translate_writes_labelled_dataset_once(cyclegan, phantom_data_dir, tmp_path):
    config, workdir = cyclegan
    out = tmp_path / "out"
    kwargs = dict(
        source="phantom_forearm_clean:train",
        from_domain="B",
        to_domain="A",
        num=10,
        output="translated_toy",
        data_dir=out,
    )
    inference.translate(config, workdir, **kwargs)
    records = _records(out, "translated_toy")
    assert len(records) == 10
    # The normal-class GAN translates only normal sources (its domain B's label filter).
    normal = sources.open_table("phantom_forearm_clean", "train", phantom_data_dir, labels=[0])
    for record in records:
        src = normal[int(record["source_index"])]
        assert record["label"] == src["label"] == 0 and record["has_mask"]
        assert record["image"].shape == (64, 64, 1)
        np.testing.assert_array_equal(record["mask"][:, :, 0], transforms.decode_png(src["mask"]))
    assert sorted(int(r["source_index"]) for r in records) == list(range(10))
    with pytest.raises(ValueError, match="already exists"):
        inference.translate(config, workdir, **kwargs)
    inference.translate(config, workdir, **kwargs, overwrite=True)
    assert len(_records(out, "translated_toy")) == 10
    # The translated dataset reads like any labelled source.
    assert set(sources.open_table("translated_toy", "train", out).column("label")) == {0}


def test_translate_bad_input(cyclegan, tmp_path):
    config, workdir = cyclegan
    with pytest.raises(ValueError, match="domain 'C' is not in the config"):
        inference.translate(
            config,
            workdir,
            source="phantom_forearm_clean:train",
            from_domain="C",
            to_domain="A",
            num=1,
            output="x",
            data_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="has only 12 records"):
        inference.translate(
            config,
            workdir,
            source="phantom_forearm_clean:train",
            from_domain="B",
            to_domain="A",
            num=99,
            output="x",
            data_dir=tmp_path,
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        inference.translate(
            config,
            tmp_path / "empty",
            source="phantom_forearm_clean:train",
            from_domain="B",
            to_domain="A",
            num=1,
            output="x",
            data_dir=tmp_path,
        )
    assert not builder.dataset_exists(tmp_path, "x")


def test_segment_both_equations(tiny_gan, tmp_path):
    config, workdir, _ = tiny_gan("multicyclegan_forearm")
    for equation in ("66", "67"):
        name = f"seg_{equation}"
        inference.segment(
            config,
            workdir,
            source="phantom_forearm_radiograph:test",
            equation=equation,
            output=name,
            data_dir=tmp_path / "out",
        )
        records = _records(tmp_path / "out", name)
        assert len(records) == 12
        for record in records:
            assert set(np.unique(record["predicted_mask"])) <= {0, 1}
            assert record["has_mask"] and record["mask"].sum() > 0  # ground truth kept
