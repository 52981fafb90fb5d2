"""DICOM files made with pydicom itself, for the tests (and the README's worked example)."""

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def make_dicom(path, pixels: np.ndarray, compress: bool = False, **attributes):
    """Write `pixels` (stored values; (H, W), or (frames, H, W)) as a DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = len(pixels)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.HighBit = ds.BitsStored - 1
    if compress:
        ds.compress(RLELossless, pixels)
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_example_folder(folder, num: int = 4, size: int = 256) -> list:
    """Natural-style forearm phantoms as PNGs, one more as a MONOCHROME1 12-bit DICOM with a
    pixel spacing, and a file that is not an image: a folder to segment."""
    import pathlib

    import cv2

    from data_prep import render

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    phantoms = [render.render_phantom("forearm", "radiograph", 7, i, size) for i in range(num + 1)]
    for i, phantom in enumerate(phantoms[:num]):
        cv2.imwrite(str(folder / f"phantom_{i}.png"), phantom.image)
    stored = np.round((255 - phantoms[num].image.astype(np.float64)) * 4095 / 255)
    make_dicom(
        folder / f"phantom_{num}.dcm",
        stored.astype(np.uint16),
        PhotometricInterpretation="MONOCHROME1",
        BitsStored=12,
        PixelSpacing=[0.1, 0.1],
    )
    (folder / "notes.txt").write_text("not an image\n")
    return phantoms


if __name__ == "__main__":
    import sys

    for i, p in enumerate(write_example_folder(sys.argv[1])):
        print(f"phantom_{i}: true radial inclination {p.radial_inclination_deg:.2f} deg")
