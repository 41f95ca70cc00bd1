"""Images a user already has on disk: a MedMNIST-format ``.npz`` file or a folder of image files.

Both load into float32 gray images ``[n, 1, S, S]`` in ``[0, 1]``, resized to ``S = image_size`` with torch's
antialiased bilinear interpolation (non-square images are stretched to square). Splits:

- ``.npz`` (MedMNIST layout): arrays ``train_images``, ``val_images``, ``test_images`` (at least one),
  each uint8 ``[n, H, W]`` or ``[n, H, W, C]`` with C in 1, 3, 4 (RGB is turned to luma, alpha dropped);
  float arrays must already lie in ``[0, 1]``. Read with ``allow_pickle=False``: an ``.npz`` is data, never
  code.
- folder: ``*.png``, ``*.jpg``, ``*.jpeg`` files, sorted by name. If it has ``train/``, ``val/`` or ``test/``
  subfolders, those are the splits; otherwise every file is in ``train``.

Loaded splits are cached per (path, modification time, size) and returned read-only, because every client and
every round asks for the same file.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "load_user_images"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_CHUNK = 4096  # images converted and resized at a time, to bound memory on large files
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_user_images(path: str | Path, image_size: int) -> dict[str, np.ndarray]:
    """Load the splits found at ``path`` as read-only float32 ``[n, 1, image_size, image_size]`` arrays.

    Raises ``ValueError`` naming the path for a missing file, an unreadable or empty source, missing keys or a
    bad shape or dtype.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"dataset path {str(p)!r} does not exist (expected a .npz file or an image folder)")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    stat = p.stat()
    splits = _cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size, image_size)
    return dict(splits)  # a fresh dict over the cached, read-only arrays


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int, image_size: int) -> dict[str, np.ndarray]:
    p = Path(path)
    splits = _read_folder(p, image_size) if p.is_dir() else _read_npz(p, image_size)
    for images in splits.values():
        images.setflags(write=False)
    return splits


def _read_npz(path: Path, size: int) -> dict[str, np.ndarray]:
    if path.suffix.lower() != ".npz":
        raise ValueError(f"dataset file {str(path)!r} is not a .npz file (expected .npz or an image folder)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = {key: archive[key] for key in archive.files if key.endswith("_images")}
            all_keys = list(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read dataset file {str(path)!r}: {e}") from e
    splits = {s: found[f"{s}_images"] for s in SPLITS if f"{s}_images" in found}
    if not splits:
        wanted = ", ".join(f"{s}_images" for s in SPLITS)
        raise ValueError(f"dataset file {str(path)!r} has none of the keys {wanted}; it has {all_keys}")
    out = {}
    for split, images in splits.items():
        where = f"{path.name}:{split}_images"
        _check_shape(images, where)
        chunks = [_to_gray(images[i : i + _CHUNK], where) for i in range(0, len(images), _CHUNK)]
        out[split] = np.concatenate([_resize(chunk, size) for chunk in chunks])
    return out


def _read_folder(path: Path, size: int) -> dict[str, np.ndarray]:
    import matplotlib.image  # a declared dependency; imported here so the package loads fast

    sub = {s: path / s for s in SPLITS if (path / s).is_dir()}
    sources = sub or {"train": path}
    out: dict[str, np.ndarray] = {}
    for split, folder in sources.items():
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"image folder {str(folder)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        images = []
        for f in files:
            try:
                pixels = matplotlib.image.imread(f)
            except (OSError, ValueError, SyntaxError) as e:
                raise ValueError(f"cannot read image {str(f)!r}: {e}") from e
            _check_shape(pixels[None], str(f))
            images.append(_resize(_to_gray(pixels[None], str(f)), size))
        out[split] = np.concatenate(images)
    return out


def _check_shape(images: np.ndarray, where: str) -> None:
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3, 4))):
        raise ValueError(f"{where}: expected images [n, H, W] or [n, H, W, C] with C in 1, 3, 4; got {images.shape}")
    if min(images.shape[:3]) == 0:
        raise ValueError(f"{where}: holds no images (shape {images.shape})")


def _to_gray(images: np.ndarray, where: str) -> np.ndarray:
    """``[n, H, W]`` or ``[n, H, W, C]`` of uint8/uint16/float -> float32 ``[n, 1, H, W]`` in ``[0, 1]``."""
    if images.dtype == np.uint8 or images.dtype == np.uint16:
        x = images.astype(np.float32) / np.float32(np.iinfo(images.dtype).max)
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0):
            raise ValueError(f"{where}: float images must lie in [0, 1]")
    else:
        raise ValueError(f"{where}: dtype {images.dtype} is not supported (use uint8, uint16 or float)")
    if x.ndim == 4:
        x = x[..., 0] if x.shape[-1] == 1 else x[..., :3] @ _LUMA
    return x[:, None]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-2:] == (size, size):
        return np.ascontiguousarray(images, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0).numpy()
