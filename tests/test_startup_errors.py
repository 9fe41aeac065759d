"""Config mistakes fail at start-up (CLI instantiation), with a message naming the bad value, before any data loading."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from _demo_config import demo_config
from PIL import Image


def _manifest(tmp_path: Path, drop_column: str | None = None) -> Path:
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    columns = {"image_path": "a.png", "study_id": "s1", "patient_id": "p1", "split": "train",
               "report": "No acute cardiopulmonary process."}
    if drop_column:
        columns.pop(drop_column)
    path = tmp_path / "manifest.csv"
    path.write_text(",".join(columns) + "\n" + ",".join(columns.values()) + "\n")
    return path


def _instantiate(tmp_path: Path, manifest: Path, vision: str | None = None, encoder: str | None = None):
    """Instantiate the demo config (as ``train.py fit`` does) pointed at ``manifest``."""
    from cxr.cli import cli_main

    config = demo_config(tmp_path, manifest, vision=vision, encoder=encoder)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return cli_main(["--config", str(config)], run=False)


@pytest.fixture()
def no_data_loading(monkeypatch):
    """Any image decode during start-up would be a bug: make it explode."""
    import cxr.data.images as images

    def boom(*_a, **_k):
        raise AssertionError("an image was decoded during start-up")

    monkeypatch.setattr(images, "load_image", boom)


def test_valid_config_instantiates_without_reading_images(tmp_path, no_data_loading) -> None:
    manifest = _manifest(tmp_path)
    cli = _instantiate(tmp_path, manifest)
    assert type(cli.model).__name__ == "CLIPAlignModule"


def test_unknown_timm_model_fails_at_startup(tmp_path, no_data_loading) -> None:
    manifest = _manifest(tmp_path)
    with pytest.raises((ValueError, SystemExit)) as exc:
        _instantiate(tmp_path, manifest, vision="resnet18x_does_not_exist")
    assert "resnet18x_does_not_exist" in _message(exc)


def test_missing_text_encoder_path_fails_at_startup(tmp_path, no_data_loading) -> None:
    manifest = _manifest(tmp_path)
    missing = tmp_path / "no_such_encoder"
    with pytest.raises((FileNotFoundError, ValueError, SystemExit)) as exc:
        _instantiate(tmp_path, manifest, encoder=str(missing))
    assert "no_such_encoder" in _message(exc)


def test_missing_manifest_column_fails_at_startup(tmp_path, no_data_loading) -> None:
    manifest = _manifest(tmp_path, drop_column="report")
    with pytest.raises((ValueError, SystemExit)) as exc:
        _instantiate(tmp_path, manifest)
    message = _message(exc)
    assert "manifest.csv" in message and ("report" in message or "text" in message), message


def _message(exc_info) -> str:
    """The error text, following the chain (jsonargparse wraps instantiation errors)."""
    parts, err = [], exc_info.value
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)
