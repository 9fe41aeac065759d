"""kill -9 mid-epoch, then ``train.py fit --ckpt_path last``: the final weights equal an uninterrupted run's, bit
for bit, for both modules (the loader position and RNG streams are in the checkpoint: cxr.data.resumable)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _fit(config: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config), *extra],
                          env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py fit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _callbacks(ckpt_dir: Path, every: int, kill_at: int | None) -> list[dict]:
    callbacks = [{"class_path": "cxr.callbacks.checkpoint.LatestCheckpoint",
                  "init_args": {"dirpath": str(ckpt_dir), "every_n_train_steps": every}}]
    if kill_at is not None:
        callbacks.append({"class_path": "_sigkill.SigkillAtStep", "init_args": {"step": kill_at}})
    return callbacks


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]


def _kill_resume_compare(tmp: Path, write_config, max_steps: int, every: int, kill_at: int,
                         steps_per_epoch: int) -> None:
    """Uninterrupted run vs. (run SIGKILLed at ``kill_at`` + resume from last.ckpt); final weights bit-identical."""
    # LatestCheckpoint saves every ``every`` steps and at each epoch end; the last save before the kill:
    saved_step = max(s for s in range(1, kill_at) if s % every == 0 or s % steps_per_epoch == 0)
    assert saved_step % steps_per_epoch, "the resumed checkpoint must be mid-epoch"
    _fit(write_config(tmp / "full.yaml", tmp / "full", None))
    killed = _fit(write_config(tmp / "killed.yaml", tmp / "killed", kill_at), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = torch.load(tmp / "killed" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == saved_step
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == \
        saved["global_step"] % steps_per_epoch
    _fit(write_config(tmp / "resume.yaml", tmp / "killed", None), "--ckpt_path", "last")
    full, resumed = _weights(tmp / "full" / "last.ckpt"), _weights(tmp / "killed" / "last.ckpt")
    assert torch.load(tmp / "killed" / "last.ckpt", weights_only=True)["global_step"] == max_steps
    assert full.keys() == resumed.keys()
    diffs = {k: (full[k].double() - resumed[k].double()).abs().max().item() for k in full if full[k].numel()}
    assert all(torch.equal(full[k], resumed[k]) for k in full), {k: d for k, d in diffs.items() if d}


@pytest.mark.slow
def test_clip_kill9_mid_epoch_resume_is_bit_identical(tmp_path: Path, synthetic_dataset,
                                                      tiny_text_model) -> None:
    manifest = synthetic_dataset("csv", num_studies=40, seed=4, image_size=32) / "manifest.csv"
    text_dir = tiny_text_model("llama", hidden_size=16, layers=1, heads=2, kv_heads=1)

    def write(path: Path, ckpt_dir: Path, kill_at: int | None) -> Path:
        config = {
            "seed_everything": 0,
            "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 9, "limit_val_batches": 0,
                        "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                        "default_root_dir": str(ckpt_dir), "callbacks": _callbacks(ckpt_dir, 3, kill_at)},
            "model": {"class_path": "cxr.models.clip_module.CLIPAlignModule",
                      "init_args": {"vision": {"class_path": "cxr.models.vision.VisionTower",
                                               "init_args": {"model_name": "test_resnet", "in_chans": 1,
                                                             "image_size": 32}},
                                    "text": {"class_path": "cxr.models.text.tower.TextTower",
                                             "init_args": {"model_name_or_path": str(text_dir), "use_cache": False,
                                                           "max_length": 48}},
                                    "embed_dim": 16, "lr": 1e-3, "layer_decay": 1.0}},
            "data": {"class_path": "cxr.data.datamodule.CXRDataModule",
                     "init_args": {"sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                                "init_args": {"name": "synth", "csv_path": str(manifest)}}],
                                   "image_size": 32, "in_chans": 1, "batch_size": 4, "num_workers": 0,
                                   "samples_per_epoch": 16}},
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # 4 steps per epoch, checkpoints at steps 3, 4, 6: killed at step 7, resumed from step 6 (epoch 1, batch 2)
    _kill_resume_compare(tmp_path, write, max_steps=9, every=3, kill_at=7, steps_per_epoch=4)


@pytest.mark.slow
def test_llm2vec_kill9_mid_epoch_resume_is_bit_identical(tmp_path: Path, synthetic_dataset) -> None:
    from cxr.models.text.tiny import build_tiny_model

    manifest = synthetic_dataset("csv", num_studies=80) / "manifest.csv"
    base = build_tiny_model("llama", tmp_path / "base", hidden_size=16, layers=1, heads=2, kv_heads=1)
    tiny = yaml.safe_load((ROOT / "configs" / "text" / "tiny_llama.yaml").read_text())

    def write(path: Path, ckpt_dir: Path, kill_at: int | None) -> Path:
        config = dict(tiny)
        config["trainer"] = {**tiny["trainer"], "max_steps": 7, "limit_val_batches": 0,
                             "enable_checkpointing": True, "enable_progress_bar": False,
                             "enable_model_summary": False, "default_root_dir": str(ckpt_dir),
                             "callbacks": _callbacks(ckpt_dir, 2, kill_at)}
        config["model"] = {**tiny["model"], "init_args": {**tiny["model"]["init_args"],
                                                          "model_name_or_path": str(base), "max_length": 64,
                                                          "export_dir": str(ckpt_dir / "export")}}
        config["data"] = {**tiny["data"], "init_args": {**tiny["data"]["init_args"], "manifest": str(manifest),
                                                        "batch_size": 4}}
        path.write_text(yaml.safe_dump(config))
        return path

    steps = _steps_per_epoch_pairs(manifest, batch_size=4)
    _kill_resume_compare(tmp_path, write, max_steps=7, every=2, kill_at=5, steps_per_epoch=steps)


def _steps_per_epoch_pairs(manifest: Path, batch_size: int) -> int:
    from cxr.data.pairs.datamodule import PairDataModule

    dm = PairDataModule(manifest=str(manifest), batch_size=batch_size)
    dm.setup("fit")
    return len(dm.train_dataloader())


class _Echo:
    """Dataset returning the key it is asked for (SeededSampler yields SampleKeys)."""

    def __getitem__(self, key):
        return key

    def __len__(self) -> int:
        return 24


@pytest.mark.parametrize("kind", ["seeded", "task"])
def test_resumable_loader_continues_the_epoch_where_the_state_was_taken(kind: str) -> None:
    from cxr.data.pairs.task_sampler import TaskBatchSampler
    from cxr.data.resumable import ResumableDataLoader
    from cxr.data.sampling import SeededSampler

    def make() -> ResumableDataLoader:
        data = list(range(24))
        if kind == "seeded":
            return ResumableDataLoader(_Echo(), batch_size=4, sampler=SeededSampler(24, seed=3), drop_last=True,
                                       collate_fn=lambda keys: [(k.index, k.seed) for k in keys])
        return ResumableDataLoader(data, batch_sampler=TaskBatchSampler(["a", "b"] * 12, 4, seed=3),
                                   collate_fn=list)

    def epoch(loader: ResumableDataLoader, e: int):  # Lightning calls set_epoch before each pass
        (loader.sampler if kind == "seeded" else loader.batch_sampler).set_epoch(e)
        return iter(loader)

    ref = make()
    epochs = [list(epoch(ref, 0)), list(epoch(ref, 1))]
    assert epochs[0] != epochs[1]
    run = make()
    list(epoch(run, 0))
    it = epoch(run, 1)
    first = [next(it), next(it)]
    state = run.state_dict()
    assert (state["epoch"], state["batches"]) == (1, 2) and first == epochs[1][:2]
    resumed = make()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(0) if kind == "seeded" else resumed.batch_sampler.set_epoch(0)
    assert list(resumed) == epochs[1][2:]  # the rest of epoch 1, not epoch 0 again nor a restart of epoch 1
