"""Translating and segmenting with trained GANs: complete, labelled datasets written once, and
folders of image files to PNGs and a CSV."""

import csv

import cv2
import dicom_files
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import multicyclegan_forearm
from data_prep import builder, errors, images, render
from xrayjax import build, inference
from xrayjax.data import sources, transforms
from xrayjax.evaluators import geometry


def _records(data_dir, name):
    source = tfds.builder_from_directory(str(builder.dataset_dir(data_dir, name))).as_data_source(
        split="train"
    )
    return [source[i] for i in range(len(source))]


def _direct(config, workdir, table, spec, fn):
    """fn(engine, gen_params, batch of preprocessed images) over every record of `table`."""
    engine, state, _ = build.load_generators(config, workdir)
    preprocess = build.domain_preprocess(config, spec, augment=False)
    images = np.stack([preprocess(table[i])["image"] for i in range(len(table))])
    return np.asarray(jax.jit(lambda p, x: fn(engine, p, x))(state.gen_params, images))


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
    # Each written image is G_AB(source) (G_IJ: J → I), computed here without the inference
    # machinery, and not the source written back.
    direct = _direct(
        config,
        workdir,
        normal.subset(np.arange(10)),
        config.domains.B,
        lambda engine, params, x: engine.translate(params, "AB", x),
    )
    preprocess = build.domain_preprocess(config, config.domains.B, augment=False)
    for record in records:
        written, index = record["image"].astype(int), int(record["source_index"])
        # One grey level of slack: a different batch may round a pixel the other way.
        difference = np.abs(written - transforms.to_uint8(direct[index]).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
        source = transforms.to_uint8(preprocess(normal[index])["image"]).astype(int)
        assert np.abs(written - source).mean() > 1
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


def test_num_past_the_source_is_refused_by_translate_and_segment(
    cyclegan, phantom_data_dir, tmp_path
):
    """--num: 0 is every record; more than the source holds (or < 0) is an error naming its
    size, for translate and segment alike, before any model is loaded."""
    config, workdir = cyclegan
    three_domains = multicyclegan_forearm.get_config("data=phantom,runlocal")
    three_domains.data_dir = str(phantom_data_dir)
    common = dict(num=0, output="x", data_dir=tmp_path)
    runs = {
        "translate": lambda **kw: inference.translate(
            config,
            workdir,
            source="phantom_forearm_clean:train",
            from_domain="B",
            to_domain="A",
            **{**common, **kw},
        ),
        "segment": lambda **kw: inference.segment(
            three_domains,
            tmp_path / "untrained",
            source="phantom_forearm_radiograph:test",
            equation="67",
            **{**common, **kw},
        ),
    }
    for run in runs.values():
        with pytest.raises(errors.InputError, match=r"--num 13: phantom_\w+:\w+ has only 12 "):
            run(num=13)
        with pytest.raises(errors.InputError, match=r"--num -1: give 0 \(all records\) or more"):
            run(num=-1)
    assert not builder.dataset_exists(tmp_path, "x")


def test_translate_a_folder_keeps_each_size(cyclegan, tmp_path):
    config, workdir = cyclegan
    source = tmp_path / "renders"
    source.mkdir()
    cv2.imwrite(str(source / "a.png"), np.full((50, 70), 90, np.uint8))
    cv2.imwrite(str(source / "a.jpg"), np.full((64, 64), 90, np.uint8))
    rows = inference.translate_folder(
        config, workdir, source=source, output=tmp_path / "out", from_domain="B", to_domain="A"
    )
    # a.png keeps its name; a.jpg, which would take it too, keeps its extension.
    assert [r["output"] for r in rows] == ["translated/a.jpg.png", "translated/a.png"]
    assert cv2.imread(str(tmp_path / "out" / rows[1]["output"]), 0).shape == (50, 70)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        inference.translate_folder(
            config,
            workdir,
            source=tmp_path / "nope",
            output=tmp_path / "o",
            from_domain="B",
            to_domain="A",
        )


def test_measurement_sees_through_resizing_and_anisotropic_pixels():
    phantom = render.render_phantom("forearm", "radiograph", 3, 2, 256)
    truth = geometry.measure_radius(phantom.mask).inclination_deg
    # Back from the model's square input onto a non-square file's geometry.
    tall = cv2.resize(phantom.mask, (192, 256), interpolation=cv2.INTER_NEAREST)
    square = images.resize_square(tall, 128, "stretch", nearest=True)
    back = inference.to_original_size(square, tall.shape, "stretch", nearest=True)
    assert back.shape == tall.shape and (back != tall).mean() < 0.02
    # Columns squeezed by 2 in pixels that are twice as wide in mm: the angle is the anatomy's.
    squeezed = cv2.resize(phantom.mask, (128, 256), interpolation=cv2.INTER_NEAREST)
    size = inference._measuring_size(squeezed.shape, [0.1, 0.2])
    assert size == (512, 512)
    restored = cv2.resize(squeezed, size, interpolation=cv2.INTER_NEAREST)
    assert abs(geometry.measure_radius(restored).inclination_deg - truth) < 1.0
    naive = cv2.resize(squeezed, inference._measuring_size(squeezed.shape, None), cv2.INTER_NEAREST)
    assert abs(geometry.measure_radius(naive).inclination_deg - truth) > 3.0


def test_segment_a_folder_against_the_truth_with_an_exact_segmenter(
    tiny_gan, tmp_path, monkeypatch
):
    """The folder path around the network (reading PNG and DICOM, preparing, resizing back,
    measuring, writing) checked against the phantoms' true angles. A stand-in segmenter returns
    each input's bone (the inputs are exact masks), so the errors left are those of a perfect
    segmentation at the model's resolution: the reference is the same masks taken to that
    resolution and back."""
    config, workdir, _ = tiny_gan("multicyclegan_forearm")

    def exact(engine, gen_params, equation, threshold):
        return lambda x: {"predicted_mask": (x > 0).astype(np.float32)}

    monkeypatch.setattr(inference, "_segment_fn", exact)
    source = tmp_path / "hospital"
    source.mkdir()
    phantoms = [render.render_phantom("forearm", "radiograph", 11, i, 256) for i in range(8)]
    for i, p in enumerate(phantoms[:7]):
        cv2.imwrite(str(source / f"p{i}.png"), p.mask * np.uint8(255))
    mask_dicom = phantoms[7].mask * np.uint8(255)
    dicom_files.make_dicom(source / "p7.dcm", mask_dicom, PixelSpacing=[0.1, 0.1])
    cv2.imwrite(str(source / "wide.png"), np.full((60, 90), 230, np.uint8))  # not square
    (source / "cut.png").write_bytes((source / "p0.png").read_bytes()[:200])
    (source / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rows = inference.segment_folder(
        config, workdir, source=source, output=out, equation="67", fit="pad"
    )
    with open(out / "measurements.csv", newline="") as f:
        table = {r["file"]: r for r in csv.DictReader(f)}
    assert list(table) == [r["file"] for r in rows]
    assert list(next(iter(table.values()))) == list(inference.CSV_COLUMNS)
    assert sorted(table) == sorted(
        [f"p{i}.png" for i in range(7)] + ["p7.dcm", "wide.png", "cut.png", "notes.txt"]
    )
    assert table["cut.png"]["reason"] == "skipped: truncated PNG"
    assert table["notes.txt"]["reason"].startswith("skipped: not an image")
    assert table["p7.dcm"]["pixel_spacing_mm"] == "0.1"
    # Masks come back at each file's own size; the area is counted there.
    for name, stem, shape in (("p0.png", "p0", (256, 256)), ("wide.png", "wide", (60, 90))):
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        assert int(table[name]["bone_area_px"]) == int((mask > 0).sum())
        overlay = cv2.imread(str(out / "overlays" / f"{stem}.png"))
        assert overlay.shape[2] == 3 and max(overlay.shape[:2]) >= 512
    assert int(table["wide.png"]["bone_area_px"]) > 0.9 * 60 * 90  # bright everywhere: bone
    assert table["wide.png"]["reason"] and not table["wide.png"]["radial_inclination_deg"]
    # The angles against the truth.
    truth = np.array([p.radial_inclination_deg for p in phantoms])
    got, reference = np.full(8, np.nan), np.full(8, np.nan)
    for i, p in enumerate(phantoms):
        row = table[f"p{i}.{'dcm' if i == 7 else 'png'}"]
        if row["radial_inclination_deg"]:
            got[i] = float(row["radial_inclination_deg"])
        coarse = cv2.resize(p.mask, (config.image_size,) * 2, interpolation=cv2.INTER_NEAREST)
        back = cv2.resize(coarse, (512, 512), interpolation=cv2.INTER_NEAREST)
        try:
            reference[i] = geometry.measure_radius(back).inclination_deg
        except ValueError:  # too coarse to part the bones: the folder run may fail here too
            pass
    error, reference_error = np.abs(got - truth), np.abs(reference - truth)
    assert np.isfinite(error).sum() >= np.isfinite(reference_error).sum() - 1
    assert np.nanmean(error) <= np.nanmean(reference_error) + 1.0


def test_segment_follows_each_equation(tiny_gan, phantom_data_dir, tmp_path):
    """Eq. 66 is G_CB(G_BA(a)), eq. 67 is G_CB(a): each written mask equals its own equation
    computed directly, and the two differ, so a swap or an all-zero output fails here."""
    config, workdir, _ = tiny_gan("multicyclegan_forearm")
    table = sources.open_table("phantom_forearm_radiograph", "test", phantom_data_dir)
    direct = {
        "66": lambda e, p, x: e.translate(p, "CB", e.translate(p, "BA", x)) > 0,
        "67": lambda e, p, x: e.translate(p, "CB", x) > 0,
    }
    written = {}
    for equation, fn in direct.items():
        inference.segment(
            config,
            workdir,
            source="phantom_forearm_radiograph:test",
            equation=equation,
            output=f"check_{equation}",
            data_dir=tmp_path,
        )
        records = sorted(_records(tmp_path, f"check_{equation}"), key=lambda r: r["source_index"])
        assert len(records) == len(table) == 12
        for record in records:
            assert set(np.unique(record["predicted_mask"])) <= {0, 1}
            assert record["has_mask"] and record["mask"].sum() > 0  # ground truth kept
        written[equation] = np.stack([r["predicted_mask"] for r in records]).astype(bool)
        expected = _direct(config, workdir, table, config.domains.A, fn)
        assert 0.0 < expected.mean() < 1.0  # neither all background nor all bone
        assert (written[equation] != expected).mean() < 0.01
    assert (written["66"] != written["67"]).mean() > 0.05
