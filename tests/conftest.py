"""Shared test set-up: offline, deterministic, small; a session-cached synthetic-world factory."""

from __future__ import annotations

import os

# Offline and quiet before anything imports transformers/albumentations.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_WORLD_CACHE: dict[tuple, Path] = {}
_REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _repo_root_stays_clean():
    """No test writes into the repository root (LightningCLI's config.yaml, lightning_logs/, ...): tests
    write under ``tmp_path`` (a CLI run gets ``--trainer.default_root_dir``). Checked at the session's end."""
    before = set(os.listdir(_REPO_ROOT))
    yield
    new = sorted(set(os.listdir(_REPO_ROOT)) - before - {".pytest_cache"})
    assert not new, f"tests wrote into the repository root: {new}"


@pytest.fixture(scope="session", autouse=True)
def _cxr_cache_dir(tmp_path_factory):
    """The image-check cache (and anything else cxr keeps in ~/.cache/cxr) goes to a per-session temp dir."""
    previous = os.environ.get("CXR_CACHE_DIR")
    os.environ["CXR_CACHE_DIR"] = str(tmp_path_factory.mktemp("cxr-cache"))
    yield
    if previous is None:
        os.environ.pop("CXR_CACHE_DIR", None)
    else:
        os.environ["CXR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """Factory ``synthetic_dataset(layout, num_studies=40, seed=0, image_size=64) -> Path``.

    Each distinct argument tuple is generated once per session (generation is deterministic).
    """
    from cxr.data.synthetic import write_synthetic_dataset

    def make(layout: str, num_studies: int = 40, seed: int = 0, image_size: int = 64, **options) -> Path:
        key = (layout, num_studies, seed, image_size, tuple(sorted(options.items())))
        if key not in _WORLD_CACHE:
            out = tmp_path_factory.mktemp(f"synthetic-{layout}")
            write_synthetic_dataset(out, layout=layout, num_studies=num_studies, seed=seed,
                                    image_size=image_size, **options)
            _WORLD_CACHE[key] = out
        return _WORLD_CACHE[key]

    return make


_TINY_MODEL_CACHE: dict[tuple, Path] = {}


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory):
    """Factory ``tiny_text_model(family="llama", **build_tiny_model_options) -> Path``: a random HF model.

    Each distinct argument tuple is built once per session and shared by every test file; tests must treat the
    folder as read-only (copy it first to change it).
    """
    from cxr.models.text.tiny import build_tiny_model

    def make(family: str = "llama", **options) -> Path:
        key = (family, tuple(sorted(options.items())))
        if key not in _TINY_MODEL_CACHE:
            out = tmp_path_factory.mktemp(f"tiny-{family}") / family
            _TINY_MODEL_CACHE[key] = build_tiny_model(family, out, **options)
        return _TINY_MODEL_CACHE[key]

    return make
