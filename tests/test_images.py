"""Raster/DICOM dispatch in ``load_image`` and ``probe_image``: bit depths, colour, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
from cxr.data.dicom import write_dicom
from cxr.data.images import is_dicom_file, load_image, probe_image


def phantom(bits: int, shape: tuple[int, int] = (48, 40), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.95, shape[1])[None, :] * np.linspace(0.5, 1.0, shape[0])[:, None]
    top = 2**bits - 1
    return np.clip((ramp + rng.normal(0, 0.02, shape)) * top, 0, top).astype(np.uint8 if bits <= 8 else np.uint16)


def min_max(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / float(x.max() - x.min())


def test_png_16bit_round_trips_to_full_range(tmp_path):
    arr = phantom(16, shape=(40, 30))
    arr[0, 0], arr[-1, -1] = 0, 65535
    Image.fromarray(arr).save(tmp_path / "pil16.png")  # PIL writes mode I;16
    cv2.imwrite(str(tmp_path / "cv16.png"), arr)
    for name in ("pil16.png", "cv16.png"):
        with Image.open(tmp_path / name) as im:
            assert im.mode in ("I;16", "I")  # 16-bit on disk, so convert("L") would saturate
        got = load_image(tmp_path / name)
        assert got.dtype == np.float32 and got.shape == arr.shape
        np.testing.assert_allclose(got, arr / 65535.0, atol=1e-6)
        assert got.max() == 1.0 and got.min() == 0.0


def test_png_16bit_holding_12bit_values_keeps_its_scale(tmp_path):
    arr = phantom(12)  # values 0..4095 stored in a 16-bit PNG: dark, but not saturated or rescaled
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_allclose(load_image(tmp_path / "a.png"), arr / 65535.0, atol=1e-6)


def test_png_8bit_jpg_tiff(tmp_path):
    arr = phantom(8, shape=(64, 48))
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "a.tif")
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_allclose(load_image(tmp_path / "a.png"), arr / 255.0, atol=1e-6)
    np.testing.assert_allclose(load_image(tmp_path / "a.tif"), arr / 255.0, atol=1e-6)
    assert np.abs(load_image(tmp_path / "a.jpg") - arr / 255.0).mean() < 0.02


def test_tiff_16bit(tmp_path):
    arr = phantom(16, shape=(20, 24))
    Image.fromarray(arr).save(tmp_path / "a.tiff")
    np.testing.assert_allclose(load_image(tmp_path / "a.tiff"), arr / 65535.0, atol=1e-6)


def test_rgb_grayscale_xray_becomes_luminance(tmp_path):
    gray = phantom(8, shape=(32, 32))
    rgb = np.stack([gray, gray, gray], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    got = load_image(tmp_path / "rgb.png")
    assert got.shape == (32, 32)
    np.testing.assert_allclose(got, gray / 255.0, atol=1e-5)
    assert np.abs(load_image(tmp_path / "rgb.jpg") - gray / 255.0).mean() < 0.02
    tinted = rgb.copy()
    tinted[..., 0] = 255  # a red annotation layer: luminance weights, not a channel pick
    Image.fromarray(tinted).save(tmp_path / "tint.png")
    expected = (255 * 0.299 + gray * (0.587 + 0.114)) / 255.0
    np.testing.assert_allclose(load_image(tmp_path / "tint.png"), expected, atol=1e-5)


def test_dicom_by_suffix_and_by_magic(tmp_path):
    arr = phantom(12)
    write_dicom(tmp_path / "a.dcm", arr, bits_stored=12)
    (tmp_path / "a.dcm").rename(tmp_path / "1.2.3.4")  # PACS exports often have no suffix
    assert is_dicom_file(tmp_path / "1.2.3.4")
    np.testing.assert_allclose(load_image(tmp_path / "1.2.3.4"), min_max(arr), atol=1e-6)
    probe_image(tmp_path / "1.2.3.4")
    write_dicom(tmp_path / "b.dcm", arr, photometric="MONOCHROME1", bits_stored=12)
    np.testing.assert_allclose(load_image(tmp_path / "b.dcm"), 1 - min_max(arr), atol=1e-6)


def _raises(fn, path: Path, defect: DecodeDefect) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as err:
        fn(path)
    assert err.value.defect is defect, str(err.value)
    assert str(path) in str(err.value)
    return err.value


@pytest.mark.parametrize("fn", [load_image, probe_image])
def test_errors_missing_and_not_an_image(tmp_path, fn):
    _raises(fn, tmp_path / "missing.png", DecodeDefect.MISSING)
    (tmp_path / "notes.png").write_text("this is a report, not a picture")
    err = _raises(fn, tmp_path / "notes.png", DecodeDefect.UNSUPPORTED_FORMAT)
    assert "not a recognised image" in str(err)


@pytest.mark.parametrize(("suffix", "cut"), [(".png", 0.5), (".jpg", 0.5), (".tif", 0.5)])
def test_truncated_raster_is_an_error_not_a_grey_image(tmp_path, suffix, cut):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (128, 128), dtype=np.uint8)  # incompressible: the cut hits pixel data
    path = tmp_path / f"a{suffix}"
    Image.fromarray(arr).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ImageDecodeError) as err:
        load_image(path)
    assert err.value.defect in (DecodeDefect.TRUNCATED, DecodeDefect.UNREADABLE)
    assert str(path) in str(err.value)


def test_probe_catches_truncated_png(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    probe_image(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="a.png"):
        probe_image(tmp_path / "a.png")


def test_constant_raster_is_rejected(tmp_path):
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "black.png")
    _raises(load_image, tmp_path / "black.png", DecodeDefect.CONSTANT)
