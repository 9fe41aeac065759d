"""Settings that cross objects: image geometry of data vs vision tower, and the text-cache fill callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from _demo_config import demo_config

from cxr.callbacks.settings_check import ImageSettingsCheck, check_image_settings
from cxr.callbacks.text_cache import TextCacheFiller
from cxr.cli import cli_main


def _model(image_size: int = 128, in_chans: int = 1) -> SimpleNamespace:
    return SimpleNamespace(vision=SimpleNamespace(image_size=image_size, in_chans=in_chans))


def test_mismatched_image_size_names_both_values():
    with pytest.raises(ValueError, match=r"data\.image_size=448 but model\.vision\.image_size=128"):
        check_image_settings(_model(128), SimpleNamespace(image_size=448, in_chans=1))


def test_mismatched_channels_names_both_values():
    with pytest.raises(ValueError, match=r"data\.in_chans=1 but model\.vision\.in_chans=3"):
        check_image_settings(_model(128, 3), SimpleNamespace(image_size=128, in_chans=1))


def test_matching_or_unrelated_settings_pass():
    check_image_settings(_model(), SimpleNamespace(image_size=128, in_chans=1))
    check_image_settings(SimpleNamespace(), SimpleNamespace(image_size=448))  # no vision tower (LLM2VEC4CXR)
    check_image_settings(_model(), SimpleNamespace(batch_size=8))  # pair data: no geometry
    check_image_settings(_model(), None)


def test_callback_checks_at_setup():
    trainer = SimpleNamespace(datamodule=SimpleNamespace(image_size=64, in_chans=1))
    with pytest.raises(ValueError, match="data.image_size=64"):
        ImageSettingsCheck().setup(trainer, _model(128), "fit")


def test_cli_refuses_a_config_whose_data_and_model_sizes_differ(synthetic_dataset, tmp_path):
    manifest = synthetic_dataset("csv") / "manifest.csv"
    config = demo_config(tmp_path, manifest)
    with pytest.raises(ValueError, match=r"data\.image_size=64 but model\.vision\.image_size=128"):
        cli_main(["--config", str(config), "--data.init_args.image_size", "64"], run=False)


class _Tower:
    def __init__(self, uses_cache: bool = True) -> None:
        self.uses_cache = uses_cache
        self.filled: list[list[str]] = []

    def fill_cache(self, texts, device=None) -> int:
        self.filled.append(list(texts))
        return len(texts)


class _Data:
    def __init__(self, shuffle_prob: float = 0.0) -> None:
        self.shuffle_prob = shuffle_prob

    def texts(self, split: str) -> list[str]:
        return [f"{split} a", f"{split} b"]


def _trainer(dm) -> SimpleNamespace:
    return SimpleNamespace(datamodule=dm, strategy=SimpleNamespace(root_device="cpu"))


def test_filler_embeds_the_splits_of_the_stage():
    tower = _Tower()
    TextCacheFiller().setup(_trainer(_Data()), SimpleNamespace(text=tower), "fit")
    TextCacheFiller().setup(_trainer(_Data()), SimpleNamespace(text=tower), "test")
    assert tower.filled == [["train a", "train b", "val a", "val b"], ["test a", "test b"]]


def test_filler_with_explicit_texts_ignores_the_datamodule():
    tower = _Tower()
    TextCacheFiller(["x", "y"]).setup(_trainer(None), SimpleNamespace(text=tower), "test")
    assert tower.filled == [["x", "y"]]


def test_filler_leaves_an_uncached_tower_alone():
    tower = _Tower(uses_cache=False)
    TextCacheFiller().setup(_trainer(_Data(shuffle_prob=0.5)), SimpleNamespace(text=tower), "fit")
    assert tower.filled == []


def test_filler_refuses_cache_with_shuffling():
    with pytest.raises(ValueError, match="shuffle_prob"):
        TextCacheFiller().setup(_trainer(_Data(shuffle_prob=0.5)), SimpleNamespace(text=_Tower()), "fit")


@pytest.mark.parametrize("flag", ["--optimizer", "--lr_scheduler"])
def test_cli_refuses_optimizer_flags_that_would_drop_the_param_groups(synthetic_dataset, tmp_path, flag):
    config = demo_config(tmp_path, synthetic_dataset("csv") / "manifest.csv", image_size=64)
    with pytest.raises(ValueError, match=f"{flag} is not supported.*parameter groups"):
        cli_main(["--config", str(config), flag, "AdamW"], run=False)


def test_cli_without_optimizer_flags_builds_the_module_optimiser(synthetic_dataset, tmp_path):
    config = demo_config(tmp_path, synthetic_dataset("csv") / "manifest.csv", image_size=64)
    cli = cli_main(["--config", str(config)], run=False)
    groups = cli.model.configure_optimizers()["optimizer"].param_groups
    assert any(g["name"].startswith("vision/") for g in groups) and any(g["name"] == "logit_scale" for g in groups)
