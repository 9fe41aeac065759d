"""Preprocessing cache: PNG tree and memmap formats, resume, errors, parallel, loader switch."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.data.decode_errors import DecodeDefect, ImageDecodeError
from cxr.data.dicom import write_dicom
from cxr.data.image_cache import CachedImageLoader, CacheFormat, ImageCache
from cxr.data.images import load_image
from cxr.data.preprocess import ErrorPolicy, main, preprocess, resize_longest

SIZE = 32


def make_tree(root: Path) -> dict[str, Path]:
    """A small mixed source tree: DICOM (suffix and extensionless), 16-bit PNG, JPEG."""
    rng = np.random.default_rng(0)
    files = {
        "p10/s1/a.dcm": lambda p: write_dicom(p, rng.integers(0, 4096, (80, 60), dtype=np.uint16),
                                             photometric="MONOCHROME1", bits_stored=12),
        "p10/s2/1.2.840.99": lambda p: write_dicom(p, rng.integers(0, 4096, (50, 70), dtype=np.uint16),
                                                   bits_stored=12),
        "p11/s3/b.png": lambda p: Image.fromarray(rng.integers(0, 65536, (64, 64), dtype=np.uint16)).save(p),
        "p11/s3/c.jpg": lambda p: Image.fromarray(rng.integers(0, 256, (40, 90), dtype=np.uint8)).save(p),
    }
    out = {}
    for rel, write in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        out[rel] = path
    return out


def expected(path: Path) -> np.ndarray:
    return resize_longest(load_image(path), SIZE) / 255.0


def test_png_cache_mirrors_tree_and_matches_decode(tmp_path):
    src = make_tree(tmp_path / "src")
    report = preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE, pattern="**/*")
    assert (report.converted, report.up_to_date, report.failed) == (4, 0, 0)
    assert (tmp_path / "cache/p10/s1/a.png").is_file()
    assert (tmp_path / "cache/p10/s2/1.2.840.99.png").is_file()  # extensionless DICOM keeps its name
    cache = ImageCache(tmp_path / "cache")
    for rel, path in src.items():
        cached = cache.resolve_cached(path)
        assert cached is not None and cached.suffix == ".png"
        got = cache.load(path)
        assert max(got.shape) == SIZE
        np.testing.assert_allclose(got, expected(path), atol=1e-6)
        np.testing.assert_allclose(cache.load(rel), got)  # relative keys work too


def test_resume_skips_up_to_date_and_redoes_changed(tmp_path):
    src = make_tree(tmp_path / "src")
    preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE, pattern="**/*")
    again = preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE, pattern="**/*")
    assert (again.converted, again.up_to_date) == (0, 4)
    newer = os.stat(tmp_path / "cache/p11/s3/b.png").st_mtime_ns + 10**9
    os.utime(src["p11/s3/b.png"], ns=(newer, newer))
    third = preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE, pattern="**/*")
    assert (third.converted, third.up_to_date) == (1, 3)


def test_changed_settings_into_same_dir_is_an_error(tmp_path):
    make_tree(tmp_path / "src")
    preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE)
    with pytest.raises(ValueError, match="already holds a cache"):
        preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE * 2)


def add_bad_files(root: Path) -> None:
    (root / "bad").mkdir()
    (root / "bad/notes.png").write_text("not an image")
    data = (root / "p10/s1/a.dcm").read_bytes()
    (root / "bad/cut.dcm").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", list(CacheFormat))
def test_skip_policy_counts_and_lists_errors(tmp_path, fmt):
    make_tree(tmp_path / "src")
    add_bad_files(tmp_path / "src")
    report = preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE, fmt=fmt, on_error=ErrorPolicy.SKIP)
    assert report.converted == 3 and report.failed == 2  # the extensionless DICOM needs --glob '**/*'
    assert report.by_defect() == {"unsupported_format": 1, "truncated": 1}
    with open(tmp_path / "cache/errors.csv") as fh:
        rows = {r["relpath"]: r["defect"] for r in csv.DictReader(fh)}
    assert rows == {"bad/notes.png": "unsupported_format", "bad/cut.dcm": "truncated"}
    assert "bad/cut.dcm" not in ImageCache(tmp_path / "cache")


def test_raise_policy_names_the_file(tmp_path):
    make_tree(tmp_path / "src")
    add_bad_files(tmp_path / "src")
    with pytest.raises(ImageDecodeError, match=r"cut\.dcm|notes\.png"):
        preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE)


def test_memmap_format_matches_png_and_resumes(tmp_path):
    src = make_tree(tmp_path / "src")
    first = preprocess(tmp_path / "src", tmp_path / "mm", size=SIZE, fmt=CacheFormat.NPY_MEMMAP, pattern="**/*")
    assert first.converted == 4
    assert (tmp_path / "mm/images.u8").stat().st_size == 4 * SIZE * SIZE
    cache = ImageCache(tmp_path / "mm")
    for path in src.values():
        got = cache.load(path)
        np.testing.assert_allclose(got, expected(path), atol=1e-6)  # (h, w) kept, padding cropped off
    extra = tmp_path / "src/p12/s9/d.png"
    extra.parent.mkdir(parents=True)
    Image.fromarray(np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 50).save(extra)
    second = preprocess(tmp_path / "src", tmp_path / "mm", size=SIZE, fmt=CacheFormat.NPY_MEMMAP, pattern="**/*")
    assert (second.converted, second.up_to_date) == (1, 4)
    cache = ImageCache(tmp_path / "mm")
    np.testing.assert_allclose(cache.load(extra), expected(extra), atol=1e-6)
    np.testing.assert_allclose(cache.load(src["p10/s1/a.dcm"]), expected(src["p10/s1/a.dcm"]), atol=1e-6)


def test_parallel_equals_serial(tmp_path):
    make_tree(tmp_path / "src")
    preprocess(tmp_path / "src", tmp_path / "serial", size=SIZE, pattern="**/*", workers=1)
    report = preprocess(tmp_path / "src", tmp_path / "par", size=SIZE, pattern="**/*", workers=2)
    assert report.converted == 4
    for png in (tmp_path / "serial").rglob("*.png"):
        twin = tmp_path / "par" / png.relative_to(tmp_path / "serial")
        np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(twin)))


def test_loader_switches_to_cache_and_works_without_originals(tmp_path):
    src = make_tree(tmp_path / "src")
    preprocess(tmp_path / "src", tmp_path / "cache", size=SIZE, pattern="**/*")
    want = {rel: expected(p) for rel, p in src.items()}
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "src", moved)  # the originals are gone from their root
    loader = CachedImageLoader(str(tmp_path / "cache"), src_root=str(tmp_path / "src"))
    for rel, path in src.items():
        np.testing.assert_allclose(loader(path), want[rel], atol=1e-6)
    strict = CachedImageLoader(str(tmp_path / "cache"), src_root=str(tmp_path / "src"), fallback=False)
    with pytest.raises(ImageDecodeError) as err:
        strict(tmp_path / "src/p99/missing.dcm")
    assert err.value.defect is DecodeDefect.MISSING
    plain = CachedImageLoader(None)
    assert plain(moved / "p11/s3/c.jpg").shape == (40, 90)  # no cache: full-size decode


def test_cli_with_csv_manifest(tmp_path, capsys):
    make_tree(tmp_path / "src")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\np10/s1/a.dcm,1\np11/s3/c.jpg,0\n")
    code = main(["--src-root", str(tmp_path / "src"), "--out", str(tmp_path / "cache"), "--size", str(SIZE),
                 "--manifest", str(manifest), "--workers", "1"])
    assert code == 0 and "converted 2" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.png")) == ["a.png", "c.png"]
    code = main(["--src-root", str(tmp_path / "src"), "--out", str(tmp_path / "cache"), "--size", str(SIZE),
                 "--manifest", str(tmp_path / "m2.txt")])
    assert code != 0


def test_manifest_listing_a_file_twice_converts_it_once_with_a_count(tmp_path, capsys):
    make_tree(tmp_path / "src")
    manifest = tmp_path / "m.txt"
    manifest.write_text("p10/s1/a.dcm\np11/s3/c.jpg\np10/s1/a.dcm\np11/s3/../s3/c.jpg\n")
    for fmt in CacheFormat:
        out = tmp_path / f"cache-{fmt.value}"
        code = main(["--src-root", str(tmp_path / "src"), "--out", str(out), "--size", str(SIZE),
                     "--manifest", str(manifest), "--workers", "1", "--format", fmt.value])
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert "converted 2" in printed and "2 duplicate manifest entries ignored" in printed
    assert (tmp_path / "cache-npy-memmap/images.u8").stat().st_size == 2 * SIZE * SIZE  # no wasted row


def test_memmap_checks_free_space_before_converting(tmp_path, monkeypatch):
    import cxr.data.preprocess as pre

    make_tree(tmp_path / "src")
    real = shutil.disk_usage
    monkeypatch.setattr(pre.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=3 * SIZE * SIZE))  # room for 3 of the 4 images
    with pytest.raises(pre.CacheWriteError, match=r"not enough free space for .*images\.u8: 4 images"):
        preprocess(tmp_path / "src", tmp_path / "mm", size=SIZE, fmt=CacheFormat.NPY_MEMMAP, pattern="**/*")
    assert not (tmp_path / "mm/images.u8").exists()


_LIMITED_RUN = """
import resource, sys
from cxr.data.preprocess import main
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(main(sys.argv[2:]))
"""


def test_memmap_disk_full_mid_run_is_a_clear_error_and_the_cache_stays_consistent(tmp_path):
    """A real write failure (the file-size limit makes write() fail with EFBIG, as a full disk gives ENOSPC):
    the old memory-mapped writer died with SIGBUS; now the run names the file, keeps and indexes the rows
    written so far, and a later run converts only the rest."""
    import subprocess
    import sys

    make_tree(tmp_path / "src")
    frame = SIZE * SIZE
    args = ["--src-root", str(tmp_path / "src"), "--out", str(tmp_path / "mm"), "--size", str(SIZE),
            "--format", "npy-memmap", "--glob", "**/*", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _LIMITED_RUN, str(2 * frame + frame // 2), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # an error exit, not a signal
    assert "images.u8 failed at image 3 of 4" in done.stderr and "File too large" in done.stderr
    assert "the 2 images written before are kept" in done.stderr
    assert (tmp_path / "mm/images.u8").stat().st_size == 2 * frame  # the partial third row is cut off
    cache = ImageCache(tmp_path / "mm")
    assert len(cache._index) == 2
    for rel in cache._index:
        np.testing.assert_allclose(cache.load(rel), expected(tmp_path / "src" / rel), atol=1e-6)
    report = preprocess(tmp_path / "src", tmp_path / "mm", size=SIZE, fmt=CacheFormat.NPY_MEMMAP, pattern="**/*")
    assert (report.converted, report.up_to_date) == (2, 2)
    cache = ImageCache(tmp_path / "mm")
    for rel in ("p10/s1/a.dcm", "p10/s2/1.2.840.99", "p11/s3/b.png", "p11/s3/c.jpg"):
        np.testing.assert_allclose(cache.load(rel), expected(tmp_path / "src" / rel), atol=1e-6)
