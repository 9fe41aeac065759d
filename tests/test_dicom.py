"""DICOM decoding: real CR (pydicom-data), synthetic files per feature, and every error path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
from cxr.data.dicom import VoiMode, decode_dicom, probe_dicom, write_dicom

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


# ----------------------------------------------------------------------------------------- helpers
def make_dataset(arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12, **attrs) -> Dataset:
    """A minimal CR dataset holding ``arr`` (uint8/uint16/int16, 2-D or frames × H × W)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.PatientID = "SYN0001"
    ds.set_pixel_data(arr, photometric_interpretation=photometric, bits_stored=bits_stored)
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def write(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
          syntax: str | None = None, **attrs) -> Path:
    return write_dicom(path, arr, photometric=photometric, bits_stored=bits_stored, transfer_syntax=syntax,
                       **attrs)


def phantom(bits: int = 12, shape: tuple[int, int] = (48, 40), seed: int = 0, signed: bool = False) -> np.ndarray:
    """A gradient plus noise covering most of the ``bits`` range (not constant, not symmetric)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ramp = np.linspace(0.05, 0.95, w)[None, :] * np.linspace(0.5, 1.0, h)[:, None]
    img = ramp + rng.normal(0, 0.02, shape)
    top = 2**bits - 1
    if signed:
        half = 2 ** (bits - 1)
        return np.clip(img * top - half, -half, half - 1).astype(np.int16)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.clip(img * top, 0, top).astype(dtype)


def min_max(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def data_store_file(name: str) -> Path:
    data_store = pytest.importorskip("data_store")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / name
    if not path.is_file():
        pytest.skip(f"pydicom-data lacks {name}")
    return path


# ------------------------------------------------------------------------ real CR chest radiograph
def test_real_cr_uncompressed_and_jpeg2000_decode_to_the_same_image():
    raw = decode_dicom(data_store_file("RG1_UNCR.dcm"))
    j2k_lossless = decode_dicom(data_store_file("RG1_J2KR.dcm"))
    j2k_lossy = decode_dicom(data_store_file("RG1_J2KI.dcm"))
    assert raw.shape == (1955, 1841) and raw.dtype == np.float32
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    # Lossless J2K is bit-exact after decoding, so the normalised images agree to float rounding.
    np.testing.assert_allclose(j2k_lossless, raw, atol=1e-6)
    # Lossy J2K: measured max 0.0134, mean 0.0017 abs difference.
    diff = np.abs(j2k_lossy - raw)
    assert diff.max() < 0.03 and diff.mean() < 0.005


def test_real_cr_monochrome1_is_inverted_to_air_dark_bone_bright():
    path = data_store_file("RG1_UNCR.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    image = decode_dicom(path)
    # The window (WC 15000 / WW 30000) covers all stored values, so display = 1 - linear(stored).
    assert np.corrcoef(stored.ravel(), image.ravel())[0, 1] < -0.999
    h, w = image.shape
    mediastinum = image[h // 3: 2 * h // 3, w // 2 - 60: w // 2 + 60].mean()
    right_lung = image[h // 3: 2 * h // 3, w // 4 - 60: w // 4 + 60].mean()
    left_lung = image[h // 3: 2 * h // 3, 3 * w // 4 - 60: 3 * w // 4 + 60].mean()
    assert right_lung < mediastinum - 0.1 and left_lung < mediastinum - 0.1
    # In stored MONOCHROME1 values it is the other way round (lungs high = "white" means dark).
    assert stored[h // 3: 2 * h // 3, w // 4 - 60: w // 4 + 60].mean() > stored[h // 3: 2 * h // 3, w // 2 - 60: w // 2 + 60].mean()


# ------------------------------------------------------------------------------- synthetic files
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_monochrome2_without_voi_is_min_max(tmp_path, bits):
    arr = phantom(bits)
    got = decode_dicom(write(tmp_path / "a.dcm", arr, bits_stored=bits))
    assert got.dtype == np.float32 and got.shape == arr.shape
    np.testing.assert_allclose(got, min_max(arr), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    arr = phantom(12)
    got = decode_dicom(write(tmp_path / "a.dcm", arr, photometric="MONOCHROME1"))
    np.testing.assert_allclose(got, 1.0 - min_max(arr), atol=1e-6)


@pytest.mark.parametrize(("photometric", "shape", "inverted"), [
    ("MONOCHROME2", "IDENTITY", False),
    ("MONOCHROME2", "INVERSE", True),
    # DX IOD: INVERSE is mandatory with MONOCHROME1 and names the same single inversion.
    ("MONOCHROME1", "INVERSE", True),
    ("MONOCHROME1", "IDENTITY", True),
])
def test_presentation_lut_shape_polarity(tmp_path, photometric, shape, inverted):
    arr = phantom(12)
    got = decode_dicom(write(tmp_path / "a.dcm", arr, photometric=photometric, PresentationLUTShape=shape))
    expected = 1.0 - min_max(arr) if inverted else min_max(arr)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_signed_16bit_with_rescale_and_window(tmp_path):
    arr = phantom(16, signed=True)
    slope, intercept, center, width = 0.5, -100.0, 1000.0, 6000.0
    got = decode_dicom(write(tmp_path / "a.dcm", arr, bits_stored=16, RescaleSlope=slope,
                                   RescaleIntercept=intercept, WindowCenter=center, WindowWidth=width))
    modality = arr.astype(np.float64) * slope + intercept
    # PS3.3 C.11.2.1.2.1 LINEAR window, as a 0..1 ramp.
    expected = np.clip((modality - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    assert 0.05 < (expected == 0).mean() + (expected == 1).mean() < 0.95  # the window really clips
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_monochrome1_12bit_rescale_window(tmp_path):
    arr = phantom(12)
    got = decode_dicom(write(tmp_path / "a.dcm", arr, photometric="MONOCHROME1", RescaleSlope=2.0,
                                   RescaleIntercept=10.0, RescaleType="US", WindowCenter=4000.0,
                                   WindowWidth=5000.0))
    expected = np.clip((arr * 2.0 + 10.0 - 3999.5) / 4999.0 + 0.5, 0, 1)
    np.testing.assert_allclose(got, 1.0 - expected, atol=1e-5)


def test_negative_rescale_slope_keeps_window_ramp(tmp_path):
    arr = phantom(12)
    got = decode_dicom(write(tmp_path / "a.dcm", arr, RescaleSlope=-1.0, RescaleIntercept=4095.0,
                                   WindowCenter=2048.0, WindowWidth=4096.0))
    expected = np.clip((4095.0 - arr - 2047.5) / 4095.0 + 0.5, 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_voi_lut_sequence_is_used_and_preferred_over_window(tmp_path):
    arr = phantom(12)
    lut = np.round(np.sqrt(np.arange(4096) / 4095.0) * 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = lut.tolist()
    item["LUTData"].VR = "US"
    ds = make_dataset(arr, WindowCenter=100.0, WindowWidth=10.0)  # a misleading window to prove LUT wins
    ds.VOILUTSequence = [item]
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    got = decode_dicom(tmp_path / "a.dcm")
    np.testing.assert_allclose(got, lut[arr] / 4095.0, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_equals_native(tmp_path, syntax):
    arr = phantom(12, shape=(64, 64))
    native = decode_dicom(write(tmp_path / "n.dcm", arr, photometric="MONOCHROME1", WindowCenter=2000.0,
                                      WindowWidth=3000.0))
    packed = write(tmp_path / "c.dcm", arr, photometric="MONOCHROME1", syntax=syntax,
                         WindowCenter=2000.0, WindowWidth=3000.0)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(decode_dicom(packed), native)


def test_multiframe_takes_frame_zero_and_can_pick_others(tmp_path):
    frames = np.stack([phantom(12, seed=s) for s in range(3)])
    path = write(tmp_path / "mf.dcm", frames)
    np.testing.assert_allclose(decode_dicom(path), min_max(frames[0]), atol=1e-6)
    np.testing.assert_allclose(decode_dicom(path, frame=2), min_max(frames[2]), atol=1e-6)
    with pytest.raises(ImageDecodeError, match="frame 3 requested, file has 3") as err:
        decode_dicom(path, frame=3)
    assert err.value.defect is DecodeDefect.BAD_FRAME


def test_voi_modes(tmp_path):
    arr = phantom(12)
    arr[0, 0] = 4095  # an outlier (burned-in marker) that percentile clipping should ignore
    path = write(tmp_path / "a.dcm", arr, WindowCenter=1000.0, WindowWidth=500.0)
    np.testing.assert_allclose(decode_dicom(path, voi=VoiMode.NONE), min_max(arr), atol=1e-6)
    lo, hi = np.percentile(arr, [1, 99])
    np.testing.assert_allclose(decode_dicom(path, voi=VoiMode.PERCENTILE, percentiles=(1, 99)),
                               np.clip((arr - lo) / (hi - lo), 0, 1), atol=1e-6)
    windowed = decode_dicom(path, voi="file")
    np.testing.assert_allclose(windowed, np.clip((arr - 999.5) / 499 + 0.5, 0, 1), atol=1e-6)
    bare = write(tmp_path / "b.dcm", arr)
    with pytest.raises(ImageDecodeError, match="b.dcm.*no VOI LUT Sequence or window"):
        decode_dicom(bare, voi=VoiMode.FILE)


def test_auto_falls_back_to_min_max_when_the_window_misses_the_data(tmp_path, caplog):
    arr = phantom(12)
    path = write(tmp_path / "a.dcm", arr, WindowCenter=60000.0, WindowWidth=10.0)
    np.testing.assert_allclose(decode_dicom(path), min_max(arr), atol=1e-6)
    assert "leaves the image constant" in caplog.text
    with pytest.raises(ImageDecodeError) as err:
        decode_dicom(path, voi=VoiMode.FILE)
    assert err.value.defect is DecodeDefect.BAD_VOI


# ------------------------------------------------------------------------------------ error paths
def assert_decode_error(path: Path, defect: DecodeDefect, *phrases: str, probe: bool = True) -> None:
    for fn in (decode_dicom, probe_dicom) if probe else (decode_dicom,):
        with pytest.raises(ImageDecodeError) as err:
            fn(path)
        assert err.value.defect is defect, (fn.__name__, str(err.value))
        assert str(path) in str(err.value) and err.value.path == str(path)
        for phrase in phrases:
            assert phrase in str(err.value), (fn.__name__, str(err.value))


def test_error_missing_file(tmp_path):
    assert_decode_error(tmp_path / "nope.dcm", DecodeDefect.MISSING, "does not exist")


def test_error_not_dicom(tmp_path):
    path = tmp_path / "text.dcm"
    path.write_text("just a text file, not an image\n" * 10)
    assert_decode_error(path, DecodeDefect.NOT_DICOM, "not a DICOM file")


def test_error_no_pixel_data(tmp_path):
    ds = make_dataset(phantom(12))
    del ds.PixelData
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert_decode_error(tmp_path / "sr.dcm", DecodeDefect.NO_PIXEL_DATA, "no PixelData")


def test_error_rgb(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    ds = make_dataset(phantom(8, shape=(16, 16)), bits_stored=8)
    ds.set_pixel_data(rgb, photometric_interpretation="RGB", bits_stored=8)
    ds.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    assert_decode_error(tmp_path / "rgb.dcm", DecodeDefect.COLOR, "SamplesPerPixel=3", "RGB")


def test_error_unsupported_transfer_syntax(tmp_path):
    from pydicom.encaps import encapsulate

    ds = make_dataset(phantom(12))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP Referenced: pixels live on a server
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "jpip.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert_decode_error(path, DecodeDefect.UNSUPPORTED_SYNTAX, "JPIP Referenced", "no pixel decoder")


def test_error_missing_plugin_names_syntax_and_plugin(tmp_path, monkeypatch):
    path = write(tmp_path / "j2k.dcm", phantom(12, shape=(32, 32)), syntax=JPEG2000Lossless)
    decoder = get_decoder(JPEG2000Lossless)
    # Simulate an install without pylibjpeg-openjpeg/Pillow J2K support (monkeypatch restores it).
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})
    assert_decode_error(path, DecodeDefect.MISSING_PLUGIN, "JPEG 2000", "pylibjpeg-openjpeg")


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless])
def test_error_truncated(tmp_path, syntax):
    path = write(tmp_path / "t.dcm", phantom(12, shape=(64, 64)), syntax=syntax)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    assert_decode_error(path, DecodeDefect.TRUNCATED)


@pytest.mark.parametrize("value", [0, 777])
def test_error_constant_image(tmp_path, value):
    path = write(tmp_path / "c.dcm", np.full((16, 16), value, dtype=np.uint16))
    assert_decode_error(path, DecodeDefect.CONSTANT, "constant", probe=False)
    probe_dicom(path)  # the header is fine: only a decode sees the pixels


def test_probe_accepts_valid_files(tmp_path):
    probe_dicom(write(tmp_path / "a.dcm", phantom(12)))
    probe_dicom(write(tmp_path / "b.dcm", phantom(12), syntax=RLELossless))
    probe_dicom(data_store_file("RG1_J2KR.dcm"))


def test_error_pickles_with_fields():
    import pickle

    err = pickle.loads(pickle.dumps(ImageDecodeError("/x/a.dcm", DecodeDefect.TRUNCATED, "cut")))
    assert (err.path, err.defect, err.reason) == ("/x/a.dcm", DecodeDefect.TRUNCATED, "cut")


def test_ct_storage_is_decoded_too(tmp_path):
    """Nothing CR-specific is required: any grayscale image object decodes (modality is not checked)."""
    ds = make_dataset(phantom(12))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    assert decode_dicom(tmp_path / "ct.dcm").shape == (48, 40)
