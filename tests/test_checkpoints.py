"""Checkpoints: last.ckpt is always the latest state; pickled (code-running) checkpoints are refused."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from cxr.callbacks.checkpoint import LatestCheckpoint


class _PlateauModule(LightningModule):
    """A linear model whose validation metric never improves after the first epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", 0.5)  # constant: only epoch 0 is "best"

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)


def _fit(tmp_path: Path, callback: ModelCheckpoint, epochs: int = 3) -> tuple[_PlateauModule, Path]:
    torch.manual_seed(0)
    model = _PlateauModule()
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[callback], default_root_dir=str(tmp_path))
    trainer.fit(model, _loader(), _loader())
    return model, Path(callback.dirpath) / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("callback_class", [LatestCheckpoint, ModelCheckpoint])
def test_last_ckpt_holds_the_final_step_when_the_metric_does_not_improve(tmp_path: Path, callback_class) -> None:
    callback = callback_class(dirpath=str(tmp_path / "ckpt"), filename="best", monitor="val/score", mode="max",
                              save_last=True)
    model, last = _fit(tmp_path, callback, epochs=3)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    final_weights = {k: v for k, v in model.state_dict().items()}
    holds_final = saved["global_step"] == 6 and all(torch.equal(saved["state_dict"][k], v)
                                                    for k, v in final_weights.items())
    best = torch.load(tmp_path / "ckpt" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] == 2  # the top-k file still follows the metric
    if callback_class is LatestCheckpoint:
        assert holds_final, saved["global_step"]
    else:  # Lightning 2.6's own behaviour, the defect LatestCheckpoint exists for; if it changes, drop ours
        assert not holds_final and saved["global_step"] == 2


def test_latest_checkpoint_refuses_link() -> None:
    with pytest.raises(ValueError, match="latest state"):
        LatestCheckpoint(save_last="link")


def test_configs_keep_last_ckpt_current() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("configs/demo.yaml", "configs/clip/llm2clip4cxr.yaml"):
        callbacks = yaml.safe_load((root / name).read_text())["trainer"]["callbacks"]
        paths = [c["class_path"] for c in callbacks]
        assert "lightning.pytorch.callbacks.ModelCheckpoint" not in paths, name
        assert "cxr.callbacks.checkpoint.LatestCheckpoint" in paths, name


# -- unsafe checkpoints ------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs code: it writes a marker file (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "cxr.models.clip_module.CLIPAlignModule"},
                "payload": _Payload(marker)}, path)
    return path, marker


def test_the_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    path, marker = _malicious_checkpoint(tmp_path)
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "pwned"


def test_eval_refuses_a_pickled_checkpoint(tmp_path: Path) -> None:
    from cxr.evaluation.model_loading import load_checkpoint_model

    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        load_checkpoint_model(path)
    assert not marker.exists()


def _tiny_config(tmp_path: Path, manifest: Path, text_model: Path) -> Path:
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "cxr.models.clip_module.CLIPAlignModule",
                  "init_args": {"vision": {"class_path": "cxr.models.vision.VisionTower",
                                           "init_args": {"model_name": "test_resnet", "in_chans": 1,
                                                         "image_size": 32}},
                                "text": {"class_path": "cxr.models.text.tower.TextTower",
                                         "init_args": {"model_name_or_path": str(text_model),
                                                       "use_cache": False, "max_length": 32}},
                                "embed_dim": 8}},
        "data": {"class_path": "cxr.data.datamodule.CXRDataModule",
                 "init_args": {"sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                            "init_args": {"name": "synth", "csv_path": str(manifest)}}],
                               "image_size": 32, "batch_size": 4, "num_workers": 0}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # spawns processes (DDP / a killed or concurrent fill / train.py)
def test_train_cli_loads_ckpt_path_with_weights_only_and_refuses_a_pickle(
        tmp_path: Path, synthetic_dataset, monkeypatch, tiny_text_model) -> None:
    from cxr.cli import cli_main

    text_model = tiny_text_model("llama", hidden_size=16, layers=1, heads=2, kv_heads=1)
    config = _tiny_config(tmp_path, synthetic_dataset("csv", num_studies=40, seed=4, image_size=32)
                          / "manifest.csv", text_model)
    path, marker = _malicious_checkpoint(tmp_path)
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

    seen: list[object] = []

    class Stop(Exception):
        pass

    def spy(self, checkpoint_path=None, weights_only=None):
        seen.append(weights_only)
        raise Stop

    benign = tmp_path / "benign.ckpt"
    torch.save({"state_dict": {}}, benign)
    with monkeypatch.context() as patch:  # what each subcommand hands to the checkpoint loader
        patch.setattr(_CheckpointConnector, "resume_start", spy)
        for subcommand in ("fit", "validate", "test", "predict"):
            with pytest.raises(Stop):
                cli_main([subcommand, "--config", str(config), "--ckpt_path", str(benign)])
    assert seen == [True] * 4
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        cli_main(["validate", "--config", str(config), "--ckpt_path", str(path)])
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights_only=false is refused"):
        cli_main(["validate", "--config", str(config), "--ckpt_path", str(benign), "--weights_only", "false"])


@pytest.mark.slow
def test_train_cli_resumes_from_last_with_weights_only(tmp_path: Path, synthetic_dataset,
                                                       tiny_text_model) -> None:
    """Our own fit checkpoints (callback, loop and optimiser state) load under weights_only=True, and
    ``--ckpt_path last`` picks up the latest epoch even though the monitored metric is not improving."""
    from cxr.cli import cli_main

    text_model = tiny_text_model("llama", hidden_size=16, layers=1, heads=2, kv_heads=1)
    config = _tiny_config(tmp_path, synthetic_dataset("csv", num_studies=40, seed=4, image_size=32)
                          / "manifest.csv", text_model)
    ckpt_dir = tmp_path / "ckpt"
    common = ["--config", str(config), "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
              "--trainer.num_sanity_val_steps=0", "--trainer.callbacks+=cxr.callbacks.checkpoint.LatestCheckpoint",
              f"--trainer.callbacks.dirpath={ckpt_dir}", "--trainer.callbacks.monitor=val/i2t_R@5",
              "--trainer.callbacks.mode=max", "--trainer.callbacks.filename=best"]
    cli_main(["fit", *common, "--trainer.max_epochs=2"])
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 4
    cli = cli_main(["fit", *common, "--trainer.max_epochs=3", "--ckpt_path", "last"])
    assert cli.trainer.global_step == 6
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 6
