"""Per-record transforms: decode, CLAHE, resize, random crop, flip, rotation, scaling to [−1, 1].

Each random transform takes a `np.random.Generator` that grain derives from (seed, record
position), so the output never depends on the worker count or on where a run was resumed.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_prep import errors


def decode_png(data: bytes, binary: bool = False) -> np.ndarray:
    """PNG bytes → uint8 (H, W); binary masks stored as {0, 1} are scaled to {0, 255}."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise errors.InputError("record holds an undecodable PNG")
    return image * np.uint8(255) if binary else image


def clahe(image: np.ndarray, clip_limit: float = 3.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (thesis 3.2.1: clip 3, 8×8 tiles)."""
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(image)


def resize(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize a square uint8 image to size×size (nearest neighbour keeps masks binary)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size×size window at a uniformly random position."""
    h, w = image.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return image[top : top + size, left : left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror left-right with probability ½."""
    return image[:, ::-1] if rng.random() < 0.5 else image


def random_rotate(
    image: np.ndarray, max_deg: float, rng: np.random.Generator, nearest: bool = False
) -> np.ndarray:
    """Rotate about the centre by a uniform angle in [−max_deg, max_deg], black outside."""
    angle = float(rng.uniform(-max_deg, max_deg))
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (w, h), flags=interp, borderValue=0)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) → float32 (H, W, 1) in [−1, 1]."""
    return (image.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0))[:, :, None]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [−1, 1] (any shape) → uint8, rounded and clipped: to_float's inverse."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Decode and (optionally) augment one record into the model's input.

    Training: decode → CLAHE → resize to load_size → random crop to image_size → flip →
    rotation (classifier only) → [−1, 1]. Evaluation (`augment=False`): decode → CLAHE →
    resize to image_size → [−1, 1].
    """

    image_size: int = 256
    load_size: int = 286
    image_key: str = "image"
    use_clahe: bool = False
    clahe_clip: float = 3.0
    clahe_tiles: int = 8
    augment: bool = True
    crop: bool = True
    flip: bool = True
    rotate_deg: float = 0.0
    keep: tuple[str, ...] = ("label",)  # scalar features passed through when present

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
        binary = self.image_key == "mask"
        image = decode_png(record[self.image_key], binary=binary)
        if self.use_clahe and not binary:
            image = clahe(image, self.clahe_clip, self.clahe_tiles)
        if self.augment:
            if rng is None:
                raise ValueError("augmenting needs a random generator")
            if self.crop:
                image = random_crop(resize(image, self.load_size, binary), self.image_size, rng)
            else:
                image = resize(image, self.image_size, binary)
            if self.flip:
                image = random_flip(image, rng)
            if self.rotate_deg:
                image = random_rotate(image, self.rotate_deg, rng, nearest=binary)
        else:
            image = resize(image, self.image_size, binary)
        out = {"image": to_float(np.ascontiguousarray(image)), "index": np.int64(record["index"])}
        for key in self.keep:
            if key in record:
                out[key] = np.asarray(record[key])
        return out


@dataclasses.dataclass(frozen=True)
class PairedPreprocess:
    """An image and its bone mask from one record, cropped and flipped identically.

    Both transforms draw their random numbers from generators seeded alike, and take the same
    draws in the same order (CLAHE draws none), so the mask stays registered with the image.
    Output: image (H, W, 1) in [−1, 1], mask (H, W, 1) in {−1, 1}, index.
    """

    image: Preprocess
    mask: Preprocess

    def __post_init__(self):
        if self.mask.image_key != "mask":
            raise ValueError(f"the mask transform must read 'mask', not {self.mask.image_key!r}")
        if self.mask.rotate_deg != self.image.rotate_deg or self.mask.augment != self.image.augment:
            raise ValueError("image and mask transforms must augment alike")

    @property
    def augment(self) -> bool:
        """Whether the pair is augmented (pipelines check this before an evaluation pass)."""
        return self.image.augment

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
        seed = None if rng is None else int(rng.integers(1 << 62))
        image = self.image(record, None if seed is None else np.random.default_rng(seed))
        mask = self.mask(record, None if seed is None else np.random.default_rng(seed))
        return {"image": image["image"], "mask": mask["image"], "index": image["index"]}
