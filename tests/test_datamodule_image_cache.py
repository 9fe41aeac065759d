"""CXRDataModule reads images from the preprocessing cache (``image_cache_dir``), even with the originals gone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cxr.data.datamodule import CXRDataModule
from cxr.data.decode_errors import ImageDecodeError
from cxr.data.image_cache import CacheFormat, ImageCache
from cxr.data.images import load_image
from cxr.data.preprocess import preprocess
from cxr.data.sources.mimic_cxr import MimicCxrSource
from cxr.data.validation import DataValidationError
from cxr.records import Split

CACHE_SIZE = 24


def _copy_world(synthetic_dataset, tmp_path):
    world = synthetic_dataset("mimic-cxr-dicom", num_studies=24, seed=3, image_size=48)
    root = tmp_path / "mimic"
    shutil.copytree(world, root)
    return root


def _module(root, **kwargs) -> CXRDataModule:
    return CXRDataModule([MimicCxrSource(str(root), image_format="dcm")], image_size=32, batch_size=4,
                         num_workers=0, **kwargs)


@pytest.mark.parametrize("fmt", [CacheFormat.PNG, CacheFormat.NPY_MEMMAP])
def test_training_reads_the_cache_without_the_originals(synthetic_dataset, tmp_path, fmt):
    root = _copy_world(synthetic_dataset, tmp_path)
    report = preprocess(root, tmp_path / "cache", size=CACHE_SIZE, fmt=fmt, pattern="files/**/*.dcm")
    assert report.converted > 0
    full = _module(root)
    full.setup("fit")
    paths = [im.path for rec in full.records(Split.TRAIN) for im in rec.images]
    # What the cache holds is the decoded original, resized to CACHE_SIZE on its longest side.
    original = load_image(paths[0])
    cached = ImageCache(tmp_path / "cache").load(paths[0])
    assert max(cached.shape) == CACHE_SIZE < max(original.shape)

    for dcm in root.joinpath("files").rglob("*.dcm"):
        dcm.unlink()  # the originals are gone; metadata, reports and labels stay
    with pytest.raises(DataValidationError, match="image file not found"):
        _module(root).load_records()  # without the cache, the set-up check catches it

    dm = _module(root, image_cache_dir=str(tmp_path / "cache"), image_cache_fallback=False)
    dm.setup("fit")
    assert [im.path for rec in dm.records(Split.TRAIN) for im in rec.images] == paths
    np.testing.assert_allclose(dm.image_loader(paths[0]), cached, atol=1e-6)
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch.images.shape) == (4, 1, 32, 32)
    assert float(batch.images.std()) > 0  # real pixels, not a blank stand-in


def test_cache_miss_without_fallback_names_the_image(synthetic_dataset, tmp_path):
    root = _copy_world(synthetic_dataset, tmp_path)
    preprocess(root, tmp_path / "cache", size=CACHE_SIZE)
    dm = _module(root, image_cache_dir=str(tmp_path / "cache"), image_cache_fallback=False)
    dm.setup("fit")
    missing = dm.records(Split.TRAIN)[0].images[0].path
    relative = dm.image_loader.cache.relpath(missing)
    (tmp_path / "cache" / relative).with_suffix(".png").unlink()
    with pytest.raises(ImageDecodeError, match="not in the image cache"):
        dm.image_loader(missing)
    # With fallback (the default) the original is decoded instead.
    fallback = _module(root, image_cache_dir=str(tmp_path / "cache"))
    assert fallback.image_loader(missing).shape == load_image(missing).shape


def test_missing_cache_is_a_start_up_error(tmp_path, synthetic_dataset):
    root = _copy_world(synthetic_dataset, tmp_path)
    with pytest.raises(FileNotFoundError, match="cache.json missing"):
        _module(root, image_cache_dir=str(tmp_path / "nowhere"))
