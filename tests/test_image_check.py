"""The full-decode set-up check (parallel, cached by size+mtime) and the SKIP guard around __getitem__."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_writers import write_image, write_manifest
from PIL import Image

import cxr.data.image_check as image_check
from cxr.data.datamodule import CXRDataModule
from cxr.data.dataset import ImageTextDataset, build_items, collate_samples
from cxr.data.image_check import ImageCheck, decode_all
from cxr.data.sampling import SampleKey, SamplingUnit, ViewPolicy
from cxr.data.sources import CsvManifestSource
from cxr.data.validation import DataValidationError, ProblemKind
from cxr.records import ImageRef, ReportSections, Split, StudyRecord


def _truncated_jpeg(path: Path) -> Path:
    write_image(path, seed=3, size=64)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a partial download: the header is intact
    return path


def test_only_a_full_decode_finds_a_truncated_jpeg_and_a_constant_image(tmp_path: Path) -> None:
    cut = _truncated_jpeg(tmp_path / "cut.jpg")
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(black)
    one = tmp_path / "one.png"
    Image.fromarray(np.full((1, 1), 77, dtype=np.uint8)).save(one)
    good = write_image(tmp_path / "good.png", seed=1)
    paths = [str(p) for p in (cut, black, one, good)]
    probed = {p: image_check.check_one(p, ImageCheck.PROBE) for p in paths}
    assert all(v.ok for v in probed.values())  # what the old set-up check let through
    decoded = decode_all(paths, workers=1)
    assert {Path(p).name: v.defect for p, v in decoded.items()} == {
        "cut.jpg": "truncated", "black.png": "constant", "one.png": "constant", "good.png": None}


def test_decode_results_are_cached_by_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(write_image(tmp_path / f"{i}.png", seed=i)) for i in range(5)]
    bad = _truncated_jpeg(tmp_path / "cut.jpg")
    paths.append(str(bad))
    cache = tmp_path / "check.json"
    calls: list[str] = []
    real = image_check._decode_one
    monkeypatch.setattr(image_check, "_decode_one", lambda p: calls.append(p) or real(p))
    first = decode_all(paths, workers=1, cache_file=cache)
    assert sorted(calls) == sorted(paths)
    calls.clear()
    second = decode_all(paths, workers=1, cache_file=cache)
    assert calls == [] and second == first  # a second run decodes nothing, bad verdicts included
    write_image(tmp_path / "2.png", seed=99, size=30)  # replaced file: other size and mtime
    later = os.stat(bad).st_mtime_ns + 2 * 10**9
    os.utime(bad, ns=(later, later))  # same bytes, touched
    decode_all(paths, workers=1, cache_file=cache)
    assert sorted(calls) == sorted([str(tmp_path / "2.png"), str(bad)])


def test_parallel_decode_equals_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_check, "MIN_POOL_IMAGES", 8)  # the pool path, without a thousand files
    paths = [str(write_image(tmp_path / f"{i}.png", seed=i, size=16)) for i in range(8)]
    paths.append(str(_truncated_jpeg(tmp_path / "cut.jpg")))
    serial = decode_all(paths, workers=1)
    parallel = decode_all(paths, workers=2, progress=False)
    assert parallel == serial and sum(not v.ok for v in parallel.values()) == 1


def test_a_directory_is_not_reported_as_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "img.png").mkdir()
    for mode in (ImageCheck.EXISTS, ImageCheck.PROBE, ImageCheck.DECODE):
        verdict = image_check.check_one(str(tmp_path / "img.png"), mode)
        assert verdict.defect == "not_a_file" and "directory" in verdict.reason


def test_datamodule_decode_check_uses_its_cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = [{"study_id": f"s{i}", "image_path": f"img/{i}.png", "report": f"Report {i}.", "split": "train"}
            for i in range(4)]
    source = CsvManifestSource("m", str(write_manifest(tmp_path, data)))
    _truncated_jpeg(tmp_path / "img" / "cut.jpg")
    (tmp_path / "img" / "2.png").unlink()
    (tmp_path / "img" / "cut.jpg").rename(tmp_path / "img" / "2.png")  # a JPEG named .png, cut short
    cache = tmp_path / "cache" / "check.json"
    with pytest.raises(DataValidationError) as err:
        CXRDataModule([source], num_workers=0, image_check_cache=str(cache)).load_records()
    assert [p.kind for p in err.value.problems] == [ProblemKind.UNREADABLE_IMAGE]
    assert "img/2.png: truncated" in str(err.value) and cache.is_file()
    monkeypatch.setattr(image_check, "_decode_one", lambda p: pytest.fail(f"decoded {p} again"))
    dm = CXRDataModule([source], num_workers=0, image_check_cache=str(cache), bad_input="skip")
    assert len(dm.load_records()[Split.TRAIN]) == 3


# -- the guard under bad_input: SKIP ------------------------------------------------------------------------------
def _dataset(tmp_path: Path, bad: set[int], skip: bool) -> ImageTextDataset:
    records = []
    for i in range(6):
        path = write_image(tmp_path / f"{i}.png", seed=i, size=16)
        if i in bad:
            path.write_bytes(path.read_bytes()[:40])
        records.append(StudyRecord(study_id=f"s{i}", patient_id=f"p{i}", split=Split.TRAIN,
                                   images=(ImageRef(str(path)),), report=ReportSections(full_text=f"Text {i}."),
                                   source="m"))
    items, _ = build_items(records, True, ViewPolicy.ALL, SamplingUnit.STUDY, True)
    from cxr.data.images import load_image

    def to_tensor(pixels, seed=None):
        return torch.from_numpy(pixels)[None]
    return ImageTextDataset(records, items, load_image, to_tensor, skip_bad_images=skip)


def test_skip_guard_substitutes_the_next_loadable_sample_and_lists_the_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = _dataset(tmp_path, bad={2, 3}, skip=True)
    with caplog.at_level(logging.WARNING):
        sample = dataset[SampleKey(2, seed=7)]
    assert sample.study_key == "m:s4" and sample.sample_index == 4  # 2 and 3 fail: the next loadable is 4
    assert [Path(p).name for p in sample.skipped_images] == ["2.png", "3.png"]
    assert sample.image.abs().sum() > 0  # a real image, never a blank stand-in
    again = dataset[SampleKey(2, seed=7)]  # deterministic, and known-bad files are not decoded again
    assert again.study_key == "m:s4" and torch.equal(again.image, sample.image)
    assert "2.png" in caplog.text and "m:s2" in caplog.text
    batch = collate_samples([dataset[0], dataset[2], dataset[5]])
    assert [Path(p).name for p in batch.skipped_images] == ["2.png", "3.png"]
    assert dataset[5].study_key == "m:s5" and dataset[5].skipped_images == ()


def test_skip_guard_wraps_around_and_fails_clearly_when_nothing_loads(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, bad={5}, skip=True)
    assert dataset[5].study_key == "m:s0"  # wraps to the start of the split
    hopeless = _dataset(tmp_path / "all", bad=set(range(6)), skip=True)
    with pytest.raises(RuntimeError, match="no image of this split can be loaded"):
        hopeless[0]


def test_without_skip_a_bad_image_raises_naming_file_and_study(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, bad={1}, skip=False)
    with pytest.raises(RuntimeError, match=r"cannot load image .*1\.png of study m:s1"):
        dataset[1]
