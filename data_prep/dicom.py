"""DICOM radiographs → 8-bit grayscale, the way a viewer shows them (pydicom does the LUTs).

Order (DICOM PS3.3 C.11): stored values → modality LUT or rescale slope/intercept → VOI LUT or
window centre/width → 8 bits over the output range those steps define → inverted when
MONOCHROME1 (where bright means air). Multi-frame files are refused: a radiograph is one frame,
and guessing which frame is wanted would be silent.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from data_prep import errors


class DicomError(errors.InputError):
    """A DICOM file that cannot be used; the message is the reason, recorded in reports."""


def looks_like_dicom(data: bytes, suffix: str = "") -> bool:
    """A Part 10 file (128-byte preamble, then "DICM"), or any file named *.dcm."""
    return data[128:132] == b"DICM" or suffix.lower() in (".dcm", ".dicom")


def _output_range(ds) -> tuple[float, float]:
    """The value range after the modality and VOI steps, which maps to 0-255.

    The same range pydicom's windowing maps into; a VOI LUT has its own output bit depth.
    """
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if "ModalityLUTSequence" in ds:
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if int(ds.PixelRepresentation) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = sorted(
            (low * float(slope) + float(intercept), high * float(slope) + float(intercept))
        )
    return low, high


def read(data: bytes) -> tuple[np.ndarray, dict]:
    """(uint8 (H, W) image, info) of a DICOM file's bytes; info holds photometric
    interpretation, pixel spacing in mm (None when absent) and the transfer syntax."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as err:  # pydicom raises many types for a damaged header
        raise DicomError(f"corrupt DICOM header ({type(err).__name__}: {err})") from err
    if "PixelData" not in ds:
        raise DicomError("no pixel data (a damaged file, or a DICOM that holds no image)")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    syntax_name = getattr(syntax, "name", str(syntax))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(
            f"multi-frame DICOM ({frames} frames); export the frame to use as its own file"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"not a grayscale radiograph (PhotometricInterpretation {photometric})")
    try:
        stored = ds.pixel_array
    except Exception as err:  # a missing decoder plugin or damaged pixel data
        raise DicomError(f"DICOM pixel data cannot be decoded ({syntax_name}): {err}") from err
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    low, high = _output_range(ds)
    scaled = np.clip((values - low) * (255.0 / max(high - low, 1e-12)), 0, 255)
    image = np.round(scaled).astype(np.uint8)
    if photometric == "MONOCHROME1":
        image = 255 - image
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    info = {
        "photometric_interpretation": photometric,
        "pixel_spacing_mm": [float(s) for s in spacing] if spacing else None,
        "transfer_syntax": syntax_name,
    }
    return image, info
