"""The one home of the multi-process test harness: gloo process groups in spawned workers (:func:`run_gloo`),
``train.py`` children (:func:`run_train`, :func:`child_env`, the configs), and a callback that dumps the
trainable weights.

The callback is imported by ``train.py`` child processes (the tests put ``tests/`` on their ``PYTHONPATH``).
Lightning is imported only when the callback is first used: the spawned gloo workers import this module too,
and importing Lightning costs each of them about 6 s of CPU on the 2-core CI machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
_RANK_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK",
              "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_gloo(fn: Callable[..., None], *args, world: int = 2) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` spawned processes joined in one gloo process group (CPU).

    ``fn`` must be a module-level function (it is pickled); results go through files (``tmp_path``). A
    worker's exception fails the call with that worker's traceback.
    """
    import torch.multiprocessing as mp

    mp.spawn(_gloo_worker, args=(fn, world, free_port(), args), nprocs=world, join=True)


def _gloo_worker(rank: int, fn: Callable[..., None], world: int, port: int, args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # two workers share the machine's cores with the test process
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        dist.barrier()  # no rank tears gloo down while the other still has collectives in flight
    finally:
        dist.destroy_process_group()
    # Skip interpreter/C++ static teardown: gloo's threads intermittently abort there ("terminate called
    # without an active exception", ~1 run in 4 on the 2-core box) after all results are saved. Errors above
    # still propagate as a non-zero exit through the exception.
    os._exit(0)


def trainable_state(trainer, pl_module) -> dict[str, torch.Tensor]:
    """Full (unsharded) copies of the trainable parameters, under FSDP too (collective: call on every rank)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    from cxr.distributed import clean_param_name

    model = trainer.strategy.model
    if isinstance(model, FullyShardedDataParallel):
        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            return {clean_param_name(n): p.detach().clone() for n, p in pl_module.named_parameters()
                    if p.requires_grad}
    return {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}


@cache
def _callbacks() -> dict[str, type]:
    from lightning.pytorch import Callback

    class TrainableDump(Callback):
        """Save the trainable weights at train start and end to ``<out>/<tag>_{start,end}.pt`` (rank 0)."""

        def __init__(self, out: str, tag: str) -> None:
            self.out = Path(out)
            self.tag = tag

        def _dump(self, trainer, pl_module, when: str) -> None:
            state = trainable_state(trainer, pl_module)
            if trainer.is_global_zero:
                self.out.mkdir(parents=True, exist_ok=True)
                torch.save(state, self.out / f"{self.tag}_{when}.pt")

        def on_train_start(self, trainer, pl_module) -> None:
            self._dump(trainer, pl_module, "start")

        def on_train_end(self, trainer, pl_module) -> None:
            self._dump(trainer, pl_module, "end")

    class GradDump(Callback):
        """Save the first step's (all-reduced) gradients and the rank-averaged loss to
        ``<out>/<tag>_grads.pt``."""

        def __init__(self, out: str, tag: str) -> None:
            self.out = Path(out)
            self.tag = tag
            self._grads: dict[str, torch.Tensor] = {}

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            if trainer.global_step == 0:
                self._grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()
                               if p.grad is not None}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step != 1:
                return
            loss = trainer.strategy.reduce(outputs["loss"].detach().float(), reduce_op="mean")
            if trainer.is_global_zero:
                self.out.mkdir(parents=True, exist_ok=True)
                torch.save({"loss": loss.cpu(), "grads": self._grads}, self.out / f"{self.tag}_grads.pt")

    for cls in (TrainableDump, GradDump):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"TrainableDump": TrainableDump, "GradDump": GradDump}


def __getattr__(name: str):
    """The Lightning callbacks (``TrainableDump``, ``GradDump``), built on first access (module docstring)."""
    callbacks = _callbacks()
    if name in callbacks:
        return callbacks[name]
    raise AttributeError(name)


def child_env(threads: int = 1) -> dict[str, str]:
    """Environment for a ``train.py``/``torchrun`` child: offline, this repo and tests/ importable, no rank vars."""
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]))
    return env


def run_train(args: list[str], cwd: Path, timeout: int = 600, launcher: list[str] | None = None) -> str:
    """Run ``train.py`` (optionally under a launcher such as torchrun) and return its output; fail with the tail."""
    cmd = (launcher or [sys.executable]) + [str(ROOT / "train.py"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def clip_config(tmp: Path, llama: Path, manifest: Path, max_steps: int, tag: str, text: dict | None = None,
                model: dict | None = None) -> Path:
    """A tiny CLIPAlignModule fit config (test_vit @ 32 px + tiny Llama, LoRA online unless ``text`` says else)
    with a ModelCheckpoint into ``tmp/ckpt`` and a :class:`TrainableDump` tagged ``tag``; returns its path."""
    import yaml

    text_args = {"model_name_or_path": str(llama), "use_cache": False, "max_length": 64, "lora": LORA, **(text or {})}
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": max_steps, "limit_val_batches": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp / "run"),
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp / "ckpt"), "save_last": True}},
                                  {"class_path": "_dist_helpers.TrainableDump",
                                   "init_args": {"out": str(tmp / "dump"), "tag": tag}}]},
        "model": {"class_path": "cxr.models.clip_module.CLIPAlignModule",
                  "init_args": {"vision": {"class_path": "cxr.models.vision.VisionTower",
                                           "init_args": {"model_name": "test_vit", "in_chans": 1,
                                                         "image_size": 32}},
                                "text": {"class_path": "cxr.models.text.tower.TextTower", "init_args": text_args},
                                # constant lr: a cosine over a 2-step run would leave lr 0 to resume with
                                "embed_dim": 16, "lr": 1e-3, "layer_decay": 1.0, "min_lr_ratio": 1.0,
                                **(model or {})}},
        "data": {"class_path": "cxr.data.datamodule.CXRDataModule",
                 "init_args": {"sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                                            "init_args": {"name": "synth", "csv_path": str(manifest)}}],
                               "image_size": 32, "in_chans": 1, "batch_size": 4, "num_workers": 0}},
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def llm2vec_config(tmp: Path, llama: Path, manifest: Path, max_steps: int, tag: str, **model) -> Path:
    """A tiny LLM2VecModule fit config (supervised, LoRA unless overridden) on pairs built from ``manifest``."""
    import yaml

    args = {"model_name_or_path": str(llama), "stage": "SUPERVISED", "lora": LORA, "max_length": 64,
            "lr": 1e-3, **model}
    config = {"seed_everything": 0,
              "trainer": {"max_steps": max_steps, "use_distributed_sampler": False, "limit_val_batches": 1,
                          "logger": False, "enable_progress_bar": False, "enable_checkpointing": False,
                          "default_root_dir": str(tmp / "run"),
                          "callbacks": [{"class_path": "_dist_helpers.TrainableDump",
                                         "init_args": {"out": str(tmp / "dump"), "tag": tag}}]},
              "model": {"class_path": "cxr.models.llm2vec_module.LLM2VecModule", "init_args": args},
              "data": {"class_path": "cxr.data.pairs.datamodule.PairDataModule",
                       "init_args": {"manifest": str(manifest), "batch_size": 2, "eval_batch_size": 8}}}
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
