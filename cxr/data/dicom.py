"""DICOM radiograph decoding: stored pixels → display-ready float32 (H, W) in [0, 1].

Follows the DICOM PS3.4 grayscale pipeline with the pydicom 3 ``pydicom.pixels`` API:
pixel data → modality LUT (rescale) → VOI (LUT sequence or window) → normalise → polarity.
pydicom never inverts MONOCHROME1 and its VOI output is in the *rescaled stored-value* range, not
``0..2**bits-1``; both are handled here (see ``_voi_output_range``).
"""

from __future__ import annotations

import logging
import os
import warnings
from enum import Enum
from pathlib import Path

import numpy as np

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError

log = logging.getLogger(__name__)

_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) LE / BE


class VoiMode(str, Enum):
    """How stored values are mapped to display contrast.

    ``AUTO``: the file's VOI LUT Sequence, else its window centre/width, else min-max; a window that
    leaves the image constant (a broken header) falls back to min-max with a warning.
    ``FILE``: the file's VOI LUT or window, and an error when it has neither.
    ``NONE``: no VOI; per-image min-max (what MIMIC-CXR-JPG did).
    ``PERCENTILE``: per-image clip to the ``percentiles`` then min-max (robust to burned-in text/markers).
    """

    AUTO = "auto"
    FILE = "file"
    NONE = "none"
    PERCENTILE = "percentile"


def decode_dicom(
    path: str | os.PathLike[str],
    *,
    voi: VoiMode = VoiMode.AUTO,
    frame: int = 0,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Decode one grayscale DICOM image to float32 ``(H, W)`` in ``[0, 1]``, air dark and bone bright.

    Handles 8–16-bit, signed, multi-frame (``frame`` picks one), native and compressed transfer
    syntaxes (JPEG Lossless, JPEG 2000, RLE via the pylibjpeg plugins). Polarity: the image is
    inverted once when PhotometricInterpretation is MONOCHROME1 *or* PresentationLUTShape is
    INVERSE. The DX IOD *requires* INVERSE together with MONOCHROME1 (PS3.3 C.8.11.7), where both
    describe the same single inversion, so a XOR of the two would leave conformant DX images
    un-inverted.

    Raises:
        ImageDecodeError: naming the file and the defect (missing file, not DICOM, no pixel data,
            colour image, unsupported syntax or missing decoder plugin, truncated/undecodable
            pixel data, frame out of range, constant image, no VOI in ``FILE`` mode).
    """
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    voi = VoiMode(voi)
    if not path.is_file():
        raise ImageDecodeError(path, DecodeDefect.MISSING, "file does not exist")
    ds = _read(path)

    stored = _decode_pixels(path, ds, frame)
    modality = apply_modality_lut(stored, ds).astype(np.float64, copy=False)
    if not np.isfinite(modality).all() or modality.max() == modality.min():
        raise ImageDecodeError(path, DecodeDefect.CONSTANT,
                               f"image is constant (all pixels {float(modality.flat[0]):g}) or non-finite")

    if voi is VoiMode.NONE:
        image = _min_max(modality)
    elif voi is VoiMode.PERCENTILE:
        image = _percentile(modality, percentiles)
    else:
        image = _apply_file_voi(path, ds, modality, voi)
    if _needs_inversion(ds):
        image = 1.0 - image
    return np.ascontiguousarray(image, dtype=np.float32)


def probe_dicom(path: str | os.PathLike[str]) -> None:
    """Cheap validation without decoding: a grayscale DICOM with pixel data and an available decoder.

    Pixel values stay on disk. Catches truncated *native* pixel data by size; truncated
    compressed data is only found by :func:`decode_dicom`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(path, DecodeDefect.MISSING, "file does not exist")
    # defer_size keeps large values (PixelData) on disk: a header read that still sees the tag.
    ds = _read(path, defer_size=1024)
    if "PixelData" not in ds:
        raise _no_pixel_error(path, ds)
    _check_image_header(path, ds)
    _check_decoder(path, ds)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return  # encapsulated fragments: only a decode shows whether they are complete
    expected = _native_size(ds)
    elem = ds.get_item("PixelData", keep_deferred=True)
    if getattr(elem, "value_tell", None) is not None:  # deferred: size from the header, not the bytes
        available = min(int(elem.length), path.stat().st_size - int(elem.value_tell))
    else:
        available = len(elem.value or b"")
    if available < expected:
        raise ImageDecodeError(path, DecodeDefect.TRUNCATED,
                               f"native pixel data holds {available} bytes, {expected} expected")


def _native_size(ds) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.BitsAllocated) * int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1))
    return (bits + 7) // 8


def _read(path: Path, **kwargs):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            # A cut-off file is reported below as TRUNCATED; pydicom's EOF warning adds nothing.
            warnings.filterwarnings("ignore", message="End of file reached", category=UserWarning)
            return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError as exc:
        raise ImageDecodeError(path, DecodeDefect.NOT_DICOM, f"not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises assorted errors on damaged headers
        raise ImageDecodeError(path, DecodeDefect.UNREADABLE, f"DICOM header unreadable: {exc}") from exc


def _decode_pixels(path: Path, ds, frame: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    if "PixelData" not in ds:
        raise _no_pixel_error(path, ds)
    _check_image_header(path, ds)
    _check_decoder(path, ds)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < n_frames:
        raise ImageDecodeError(path, DecodeDefect.BAD_FRAME, f"frame {frame} requested, file has {n_frames}")
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        with warnings.catch_warnings():
            # pydicom warns (then pads/crops) on odd lengths; a short buffer is caught below.
            warnings.simplefilter("ignore", UserWarning)
            arr = pixel_array(ds, index=frame if n_frames > 1 else None)
    except Exception as exc:  # decoder libraries raise many types; all mean "cannot decode this file"
        defect = DecodeDefect.TRUNCATED if _looks_truncated(exc, syntax.is_compressed) else DecodeDefect.UNDECODABLE
        raise ImageDecodeError(path, defect,
                               f"pixel data ({syntax.name}) could not be decoded: {exc}") from exc
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageDecodeError(path, DecodeDefect.UNDECODABLE, f"decoded pixel array has shape {arr.shape}")
    _check_bits_stored(path, ds, frame)
    return arr


_NATIVE_DTYPES = {8: "u1", 16: "u2", 32: "u4"}


def _check_bits_stored(path: Path, ds, frame: int) -> None:
    """A ``BitsStored`` smaller than the data: pydicom masks every value to that many bits, so a 12-bit image
    declared 3-bit decodes to 8 grey levels without a word. Detected on native unsigned data by looking at
    the raw words: if most pixels have bits above ``BitsStored`` set, the header is wrong. (A few such pixels
    are legitimate: old files keep overlays in the unused high bits, which masking is meant to drop.)"""
    bits_stored, bits_allocated = int(ds.get("BitsStored", 0) or 0), int(ds.BitsAllocated)
    syntax = ds.file_meta.TransferSyntaxUID
    if (not 0 < bits_stored < bits_allocated or syntax.is_compressed or int(ds.get("PixelRepresentation", 0))
            or bits_allocated not in _NATIVE_DTYPES):
        return
    order = ">" if syntax == "1.2.840.10008.1.2.2" else "<"  # explicit VR big endian (retired)
    count = int(ds.Rows) * int(ds.Columns)
    dtype = np.dtype(order + _NATIVE_DTYPES[bits_allocated])
    raw = np.frombuffer(ds.PixelData, dtype=dtype, count=count, offset=frame * count * dtype.itemsize)
    above = float(np.mean((raw >> bits_stored) != 0))
    if above > 0.5:
        peak = int(raw.max())
        raise ImageDecodeError(path, DecodeDefect.BAD_BITS,
                               f"BitsStored={bits_stored} but {above:.0%} of the pixels have higher bits set (values "
                               f"up to {peak}, which needs {peak.bit_length()} bits): the header is wrong, and "
                               f"decoding would keep only {2 ** bits_stored} grey levels")


def _check_image_header(path: Path, ds) -> None:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in _GRAYSCALE:
        raise ImageDecodeError(
            path, DecodeDefect.COLOR,
            f"not a grayscale radiograph: SamplesPerPixel={samples}, PhotometricInterpretation="
            f"{photometric or '<missing>'} (RGB/YBR/PALETTE secondary captures are not supported; "
            "convert them to grayscale first)")
    for tag in ("Rows", "Columns", "BitsAllocated"):
        if tag not in ds:
            raise ImageDecodeError(path, DecodeDefect.UNDECODABLE, f"required attribute {tag} is missing")
    bits_stored, bits_allocated = ds.get("BitsStored"), int(ds.BitsAllocated)
    if bits_stored is not None and not 1 <= int(bits_stored) <= bits_allocated:
        raise ImageDecodeError(path, DecodeDefect.BAD_BITS, f"BitsStored={int(bits_stored)} is impossible with "
                               f"BitsAllocated={bits_allocated} (must be 1..{bits_allocated})")


def _check_decoder(path: Path, ds) -> None:
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None:
        raise ImageDecodeError(path, DecodeDefect.UNSUPPORTED_SYNTAX, "no TransferSyntaxUID in file meta")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageDecodeError(path, DecodeDefect.UNSUPPORTED_SYNTAX,
                               f"transfer syntax {syntax.name} ({syntax}) has no pixel decoder") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin registered"
        raise ImageDecodeError(
            path, DecodeDefect.MISSING_PLUGIN,
            f"transfer syntax {syntax.name} ({syntax}) needs a decoder plugin that is not installed: "
            f"{missing} (install pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle)")


def _no_pixel_error(path: Path, ds) -> ImageDecodeError:
    for alt in ("FloatPixelData", "DoubleFloatPixelData"):
        if alt in ds:
            return ImageDecodeError(path, DecodeDefect.NO_PIXEL_DATA,
                                    f"has {alt} instead of integer PixelData (not a radiograph; unsupported)")
    # pydicom silently drops an encapsulated PixelData element cut off by end-of-file, so a
    # PixelData tag in the bytes but not in the dataset means a truncated file.
    with open(path, "rb") as fh:
        data = fh.read()
        if any(tag in data for tag in _PIXEL_DATA_TAGS):
            return ImageDecodeError(path, DecodeDefect.TRUNCATED,
                                    "file ends inside the PixelData element (truncated download/copy?)")
    # A file cut off before the pixel data element even starts: its SOP class still says it is an image,
    # but the image attributes (group 0028, written before the pixels) never arrived either.
    sop = _sop_class(ds)
    if sop is not None and "Image Storage" in sop.name and not ("Rows" in ds and "Columns" in ds):
        return ImageDecodeError(path, DecodeDefect.TRUNCATED,
                                f"the file ends before its pixel data ({path.stat().st_size} bytes, a {sop.name} "
                                "without PixelData): truncated download/copy?")
    return ImageDecodeError(path, DecodeDefect.NO_PIXEL_DATA,
                            "no PixelData element (e.g. a structured report, DICOMDIR or presentation state)")


def _sop_class(ds):
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    value = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return UID(str(value)) if value else None


def _looks_truncated(exc: Exception, compressed: bool = False) -> bool:
    text = str(exc).lower()
    words = ("truncat", "too short", "not enough", "insufficient", "end of")
    if not compressed:  # native data: pydicom's size messages ("fewer bytes than expected", buffer length)
        words += ("expected", "buffer", "length")
    # Codec messages such as "SIZ marker length must be at least 38" describe damage, not a cut-off file.
    return any(k in text for k in words)


def _apply_file_voi(path: Path, ds, modality: np.ndarray, voi: VoiMode) -> np.ndarray:
    from pydicom.pixels import apply_voi_lut

    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not (has_lut or has_window):
        if voi is VoiMode.FILE:
            raise ImageDecodeError(path, DecodeDefect.NO_VOI,
                                   "voi=FILE but the file has no VOI LUT Sequence or window centre/width")
        return _min_max(modality)
    # A LUT is indexed by integer modality values; pydicom warns (rightly) on float input.
    voi_input = np.rint(modality).astype(np.int64) if has_lut else modality
    try:
        out = apply_voi_lut(voi_input, ds, index=0, prefer_lut=True).astype(np.float64, copy=False)
        lo, hi = _voi_output_range(ds, has_lut)
    except Exception as exc:  # malformed LUT descriptor / window values
        if voi is VoiMode.FILE:
            raise ImageDecodeError(path, DecodeDefect.BAD_VOI, f"VOI could not be applied: {exc}") from exc
        log.warning("%s: VOI could not be applied (%s); using min-max", path, exc)
        return _min_max(modality)
    if hi == lo or out.max() == out.min():
        if voi is VoiMode.FILE:
            raise ImageDecodeError(path, DecodeDefect.BAD_VOI, "the file's VOI leaves the image constant")
        log.warning("%s: the file's VOI leaves the image constant; using min-max", path)
        return _min_max(modality)
    # (out - lo) / (hi - lo) also holds for a negative rescale slope (hi < lo): it recovers the
    # window's own 0..1 ramp, increasing with the modality value.
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def _voi_output_range(ds, has_lut: bool) -> tuple[float, float]:
    """The range pydicom's VOI maps *into*, asked of pydicom itself so its conventions can't drift.

    Window: the outputs for -inf and +inf are exactly its y_min / y_max. LUT: the min/max of the
    whole decoded table (robust to LUTs that declare 16 bits but only use 12).
    """
    from pydicom.pixels import apply_voi_lut

    if has_lut:
        item = ds.VOILUTSequence[0]
        n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + n_entries, dtype=np.int64), ds, prefer_lut=True)
        return float(table.min()), float(table.max())
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ends = apply_voi_lut(np.array([-np.inf, np.inf]), ds, prefer_lut=False)
    return float(ends[0]), float(ends[1])


def _min_max(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo)


def _percentile(arr: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    p_lo, p_hi = percentiles
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    lo, hi = (float(v) for v in np.percentile(arr, [p_lo, p_hi]))
    if hi <= lo:  # e.g. a mostly-constant image: the percentiles coincide
        return _min_max(arr)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def _needs_inversion(ds) -> bool:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def write_dicom(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    transfer_syntax: str | None = None,
    **attributes: object,
) -> Path:
    """Write ``pixels`` (uint8/uint16/int16, ``(H, W)`` or ``(frames, H, W)``) as a CR DICOM file.

    For tests, benchmarks and synthetic data. ``transfer_syntax`` compresses with pydicom's
    encoders (RLE natively, JPEG 2000 via pylibjpeg-openjpeg); ``attributes`` are set verbatim
    (e.g. ``WindowCenter=...``, ``RescaleSlope=...``, ``PresentationLUTShape=...``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    pixels = np.asarray(pixels)
    bits = bits_stored if bits_stored is not None else pixels.dtype.itemsize * 8
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits)
    for key, value in attributes.items():
        setattr(ds, key, value)
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path
