"""Reading image files of any common depth and channel layout (DICOM included) into 256×256
grayscale."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

from data_prep import dicom, errors

FIT_MODES = ("stretch", "pad")

# Leading bytes of the formats OpenCV reads; anything else is reported as "not an image".
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


class UnreadableImage(errors.InputError):
    """A file that cannot be used as an image; the message is the reason, recorded in reports."""


def _format_of(data: bytes) -> str | None:
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    return None


def _is_truncated(data: bytes, fmt: str) -> bool:
    # libjpeg only warns on a missing end marker and returns a half-grey image; libpng may
    # return rows of zeros. Checking the trailer catches both before decoding.
    if fmt == "png":
        return b"IEND" not in data[-12:]
    if fmt == "jpeg":
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return False


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded 8- or 16-bit gray, RGB or RGBA array (OpenCV order) to uint8 gray."""
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise UnreadableImage(f"unsupported channel count {channels}")
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16 or np.issubdtype(image.dtype, np.floating):
        # 16-bit radiographs rarely use the full range (12-bit detectors), so stretch the
        # image's own range rather than dividing by 257.
        image = image.astype(np.float64)
        lo, hi = float(image.min()), float(image.max())
        if hi <= lo:
            return np.zeros(image.shape, np.uint8)
        return np.round((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    raise UnreadableImage(f"unsupported pixel type {image.dtype}")


def resize_square(image: np.ndarray, size: int, fit: str = "stretch", nearest: bool = False):
    """Resize a 2-D image to size×size by stretching (the thesis) or by zero-padding to a square."""
    if fit not in FIT_MODES:
        raise errors.InputError(f"unknown fit mode {fit!r}; allowed: {', '.join(FIT_MODES)}")
    if fit == "pad":
        h, w = image.shape
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        image = cv2.copyMakeBorder(
            image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0
        )
    if image.shape == (size, size):
        return image
    if nearest:
        interp = cv2.INTER_NEAREST
    elif image.shape[0] > size:
        interp = cv2.INTER_AREA  # no aliasing when shrinking
    else:
        interp = cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def read_gray_with_info(path: pathlib.Path) -> tuple[np.ndarray, dict]:
    """Read an image file (PNG, JPEG, BMP, TIFF or DICOM) as a 2-D uint8 array, with what a
    DICOM file says about it (photometric interpretation, pixel spacing; empty otherwise).
    Raises UnreadableImage with the reason."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    if not data:
        raise UnreadableImage("empty file")
    if dicom.looks_like_dicom(data, path.suffix):
        try:
            return dicom.read(data)
        except dicom.DicomError as err:
            raise UnreadableImage(str(err)) from err
    fmt = _format_of(data)
    if fmt is None:
        raise UnreadableImage("not an image (unrecognised file signature)")
    if _is_truncated(data, fmt):
        raise UnreadableImage(f"truncated {fmt.upper()}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UnreadableImage(f"corrupt {fmt.upper()} (cannot be decoded)")
    return to_gray_uint8(image), {}


def read_gray(path: pathlib.Path) -> np.ndarray:
    """Read an image file (DICOM included) as a 2-D uint8 array, raising UnreadableImage."""
    return read_gray_with_info(path)[0]


def load_image(path: pathlib.Path, size: int, fit: str = "stretch") -> np.ndarray:
    """Read an image file and return it as uint8 (size, size, 1)."""
    return resize_square(read_gray(path), size, fit)[:, :, None]


def load_mask(path: pathlib.Path, size: int, fit: str = "stretch") -> np.ndarray:
    """Read a mask file and return it binarised as uint8 {0, 1} with shape (size, size, 1)."""
    gray = read_gray(path)
    # Anti-aliased or 0/255 masks both binarise at half their maximum.
    binary = (gray > max(int(gray.max()) // 2, 0)).astype(np.uint8)
    return resize_square(binary, size, fit, nearest=True)[:, :, None]


def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 1) array as PNG bytes (what tfds Image features store)."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def list_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Every visible regular file directly inside `folder`, sorted by name.

    Non-image files are returned too: the reader rejects them with a reason that is counted.
    """
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
