"""DICOM import: each encoding of one 8-bit radiograph reads back as that radiograph."""

import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from dicom_files import make_dicom

from data_prep import builder, dicom, image_folder, render


@pytest.fixture(scope="module")
def radiograph():
    """The 8-bit image every DICOM variant encodes."""
    return render.render_phantom("forearm", "radiograph", 0, 1, 64).image


def _read(path):
    return dicom.read(path.read_bytes())


def test_monochrome2_8_bit(radiograph, tmp_path):
    image, info = _read(make_dicom(tmp_path / "a.dcm", radiograph, PixelSpacing=[0.15, 0.15]))
    np.testing.assert_array_equal(image, radiograph)
    assert info["photometric_interpretation"] == "MONOCHROME2"
    assert info["pixel_spacing_mm"] == [0.15, 0.15]


def test_monochrome1_12_bits_in_16(radiograph, tmp_path):
    stored = np.round((255 - radiograph.astype(np.float64)) * 4095 / 255).astype(np.uint16)
    path = make_dicom(
        tmp_path / "b.dcm", stored, PhotometricInterpretation="MONOCHROME1", BitsStored=12
    )
    image, info = _read(path)
    assert np.abs(image.astype(int) - radiograph).max() <= 1
    assert info["pixel_spacing_mm"] is None


def test_signed_with_rescale(radiograph, tmp_path):
    stored = (radiograph.astype(np.int32) * 257 - 32768).astype(np.int16)
    path = make_dicom(tmp_path / "c.dcm", stored, RescaleSlope=0.5, RescaleIntercept=100)
    image, _ = _read(path)
    assert np.abs(image.astype(int) - radiograph).max() <= 1


def test_voi_window(radiograph, tmp_path):
    # 12-bit values inside [1000, 3000]; the window shows exactly that range.
    stored = np.round(1000 + radiograph.astype(np.float64) * 2000 / 255).astype(np.uint16)
    path = make_dicom(
        tmp_path / "d.dcm", stored, BitsStored=12, WindowCenter=2000.5, WindowWidth=2001
    )
    image, _ = _read(path)
    assert np.abs(image.astype(int) - radiograph).max() <= 1
    # Without the window the same values fill only the middle of the 12-bit range.
    plain, _ = _read(make_dicom(tmp_path / "e.dcm", stored, BitsStored=12))
    assert plain.max() < 200 and plain.min() > 50


def test_rle_compressed(radiograph, tmp_path):
    image, info = _read(make_dicom(tmp_path / "f.dcm", radiograph, compress=True))
    np.testing.assert_array_equal(image, radiograph)
    assert info["transfer_syntax"] == "RLE Lossless"


def test_bad_files_are_refused_with_a_reason(radiograph, tmp_path):
    good = make_dicom(tmp_path / "g.dcm", radiograph).read_bytes()
    with pytest.raises(dicom.DicomError, match="pixel data"):
        dicom.read(good[: len(good) - 2000])  # pixel data cut short
    with pytest.raises(dicom.DicomError, match="multi-frame DICOM .2 frames"):
        _read(make_dicom(tmp_path / "h.dcm", np.stack([radiograph, radiograph])))
    with pytest.raises(dicom.DicomError, match="no pixel data"):
        dicom.read(good[:132] + b"\xff" * 64)


def test_image_folder_imports_dicom_beside_png(radiograph, tmp_path):
    src = tmp_path / "hospital"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), radiograph)
    stored = np.round((255 - radiograph.astype(np.float64)) * 4095 / 255).astype(np.uint16)
    make_dicom(
        src / "b.dcm",
        stored,
        PhotometricInterpretation="MONOCHROME1",
        BitsStored=12,
        PixelSpacing=[0.2, 0.1],
    )
    # No extension: recognised by the DICOM preamble.
    make_dicom(src / "c", radiograph, compress=True)
    (src / "d.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)  # corrupt
    data = tmp_path / "tfds"
    image_folder.main(["--source", str(src), "--name", "hospital", "--data-dir", str(data)])
    folder = builder.dataset_dir(data, "hospital")
    source = tfds.builder_from_directory(str(folder)).as_data_source(split="train")
    records = {r["file_name"].decode(): r for r in (source[i] for i in range(len(source)))}
    assert sorted(records) == ["a.png", "b.dcm", "c"]
    for name in ("b.dcm", "c"):
        diff = records[name]["image"].astype(int) - records["a.png"]["image"].astype(int)
        assert np.abs(diff).max() <= 1, name
    # 64 px stored at 256 px: each pixel covers a quarter of the original's spacing.
    np.testing.assert_allclose(records["b.dcm"]["pixel_spacing_mm"], [0.05, 0.025])
    np.testing.assert_array_equal(records["a.png"]["pixel_spacing_mm"], [-1, -1])
    report = json.loads((folder / "prep_report.json").read_text())
    assert report["settings"]["dicom"]["b.dcm"]["photometric_interpretation"] == "MONOCHROME1"
    assert report["settings"]["dicom"]["b.dcm"]["pixel_spacing_mm"] == [0.2, 0.1]
    assert report["settings"]["dicom"]["c"]["transfer_syntax"] == "RLE Lossless"
    assert report["splits"]["train"]["written"] == 3
    assert list(report["splits"]["train"]["skipped_by_reason"]) == [
        "no pixel data (a damaged file, or a DICOM that holds no image)"
    ]
