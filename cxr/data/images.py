"""Load any radiograph file (DICOM, PNG 8/16-bit, JPEG, TIFF) as float32 ``(H, W)`` in ``[0, 1]``.

The one entry point for pixels: :func:`load_image` (decode) and :func:`probe_image` (cheap
validation for set-up checks). Both raise :class:`ImageDecodeError` naming the file and the defect;
nothing here ever returns a blank stand-in image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
from cxr.data.dicom import decode_dicom, probe_dicom

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a ``.dcm``-like suffix, or any file with the ``DICM`` magic at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def require_image_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a non-empty regular file, else the precise defect.

    A directory is NOT_A_FILE (not "does not exist"), a 0-byte file EMPTY_FILE (an interrupted download).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ImageDecodeError(path, DecodeDefect.NOT_A_FILE, "is a directory, not an image file")
        if path.exists():
            raise ImageDecodeError(path, DecodeDefect.NOT_A_FILE, "is not a regular file")
        raise ImageDecodeError(path, DecodeDefect.MISSING, "file does not exist")
    if path.stat().st_size == 0:
        raise ImageDecodeError(path, DecodeDefect.EMPTY_FILE, "file is empty (0 bytes: an interrupted download "
                               "or copy?)")
    return path


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to float32 ``(H, W)`` in ``[0, 1]`` (air dark, bone bright).

    DICOM (by suffix or ``DICM`` magic) goes through :func:`cxr.data.dicom.decode_dicom` with its
    defaults. Rasters: 8-bit scale by 255; 16-bit (PIL ``I;16``/``I``) by the dtype's range
    (65535), *not* ``convert("L")`` which saturates; RGB/RGBA → ITU-R 601 luminance; constant
    images are rejected like constant DICOMs.
    """
    path = require_image_file(path)
    if is_dicom_file(path):
        return decode_dicom(path)
    return _load_raster(path)


def probe_image(path: str | os.PathLike[str]) -> None:
    """Validate ``path`` cheaply (header only) or raise :class:`ImageDecodeError`.

    DICOM: header + PixelData presence + decoder availability + native-size check. Rasters: PIL
    ``verify()`` (structure and CRCs for PNG) plus a size check. Truncation inside compressed
    data is only certain after a full :func:`load_image`.
    """
    path = require_image_file(path)
    if is_dicom_file(path):
        probe_dicom(path)
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
            if im.width < 1 or im.height < 1:
                raise ImageDecodeError(path, DecodeDefect.UNREADABLE, f"empty image {im.size}")
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, DecodeDefect.UNSUPPORTED_FORMAT, f"not a recognised image ({exc})") from exc
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL raises SyntaxError/OSError/struct.error on damaged files
        raise ImageDecodeError(path, _raster_defect(exc), f"image file is damaged: {exc}") from exc


def _load_raster(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode: truncated files fail here, not later
            arr = _pil_to_gray(path, im)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, DecodeDefect.UNSUPPORTED_FORMAT, f"not a recognised image ({exc})") from exc
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(path, _raster_defect(exc), f"image could not be decoded: {exc}") from exc
    if arr.max() == arr.min():
        raise ImageDecodeError(path, DecodeDefect.CONSTANT, f"image is constant (all pixels {float(arr.flat[0]):g})")
    return arr


def _pil_to_gray(path: Path, im) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "P", "LA", "1"):
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    elif mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        arr = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255.0
    elif mode.startswith("I;16") or mode == "I":
        raw = np.asarray(im)
        # Mode "I" (int32) is how PIL opens 16-bit PNGs; values still live in 0..65535.
        if raw.min() < 0 or raw.max() > 65535:
            raise ImageDecodeError(path, DecodeDefect.UNDECODABLE,
                                   f"integer image with values outside 0..65535 ({raw.min()}..{raw.max()})")
        arr = raw.astype(np.float32) / 65535.0
    elif mode == "F":
        raw = np.asarray(im, dtype=np.float32)
        lo, hi = float(raw.min()), float(raw.max())
        arr = (raw - lo) / (hi - lo) if hi > lo else raw * 0.0
    else:
        raise ImageDecodeError(path, DecodeDefect.UNSUPPORTED_FORMAT, f"unsupported PIL mode {mode}")
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), dtype=np.float32)


def _raster_defect(exc: Exception) -> DecodeDefect:
    text = str(exc).lower()
    if "truncat" in text or "broken data stream" in text or "image file is truncated" in text:
        return DecodeDefect.TRUNCATED
    return DecodeDefect.UNREADABLE
