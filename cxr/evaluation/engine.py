"""The Lightning side of ``eval.py``: where the evaluation runs (device, precision, several GPUs) and the
``LightningModule`` that embeds one held-out dataset through ``Trainer.test``.

Any model with ``encode_images(images)`` and ``encode_texts(texts)`` is wrapped (a ``CLIPAlignModule`` from a
checkpoint, or an imported/exported model). Under DDP every rank embeds its share of the loader (Lightning puts
a ``DistributedSampler`` in), the retrieval metric gathers the embeddings at the end and drops the samples the
sampler padded in, and the per-sample study keys and report texts are gathered as Python objects.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import nn

from cxr.callbacks.text_cache import TextCacheFiller
from cxr.data.batch import ImageTextBatch

log = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, gpu (= cuda), cuda:N, mps"


@dataclass(frozen=True)
class EvalRuntime:
    """Where and how ``eval.py`` runs (turned into a Lightning ``Trainer``).

    Args:
        device: ``auto`` (a GPU when one is present, else CPU), ``cpu``, ``gpu``/``cuda``, ``cuda:N``, ``mps``.
        devices: how many devices (``auto``: all the accelerator has). Several need a ``strategy`` such as
            ``ddp``; Lightning then starts one process per device by re-running the command.
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``, ...).
        progress_bar: show a progress bar per dataset.
    """

    device: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress_bar: bool = True


def accelerator_and_devices(device: str, devices: int | str = 1) -> tuple[str, int | str | list[int]]:
    """Map ``EvalRuntime.device``/``devices`` to Lightning's ``accelerator``/``devices`` arguments.

    ``cuda:N`` selects GPU index N (then ``devices`` must be 1); ``auto`` leaves the choice to Lightning, which
    takes CUDA when ``torch.cuda.is_available()``, else MPS, else the CPU.
    """
    name = str(device).strip().lower()
    if name in ("auto", "cpu", "mps"):
        return name, devices
    if name in ("gpu", "cuda"):
        return "gpu", devices
    match = re.fullmatch(r"cuda:(\d+)", name)
    if match:
        if devices not in (1, "1"):
            raise ValueError(f"device {device!r} names one GPU; use --device gpu --devices {devices} for several")
        return "gpu", [int(match.group(1))]
    raise ValueError(f"unknown device {device!r}; expected one of: {DEVICE_CHOICES}")


class _DatasetProgressBar(TQDMProgressBar):
    """Lightning's bar, labelled with the dataset being evaluated instead of "Testing"."""

    def __init__(self) -> None:
        super().__init__()
        self.label = "eval"

    @property
    def test_description(self) -> str:
        return self.label


def build_eval_trainer(runtime: EvalRuntime = EvalRuntime(), max_batches: int | None = None,
                       root_dir: str | None = None) -> Trainer:
    """A Trainer for ``Trainer.test``-based evaluation: no logger, no checkpoints, the runtime's device."""
    accelerator, devices = accelerator_and_devices(runtime.device, runtime.devices)
    callbacks = [_DatasetProgressBar()] if runtime.progress_bar else []
    return Trainer(accelerator=accelerator, devices=devices, strategy=runtime.strategy,
                   precision=runtime.precision, logger=False, enable_checkpointing=False,
                   enable_model_summary=False, enable_progress_bar=runtime.progress_bar, callbacks=callbacks,
                   limit_test_batches=max_batches if max_batches is not None else 1.0,
                   default_root_dir=root_dir, inference_mode=True)


def describe_trainer(trainer: Trainer) -> dict[str, str | int]:
    """What actually ran (for results.json): accelerator, root device, process count, precision."""
    return {"accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
            "root_device": str(trainer.strategy.root_device), "world_size": int(trainer.world_size),
            "precision": str(trainer.precision)}


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` under an initialised process group, else ``[obj]``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class EmbeddingEvalModule(LightningModule):
    """Embeds one dataset per ``Trainer.test`` call into a metric; ``finish`` turns it into a result.

    Args:
        model: an ``nn.Module`` with ``encode_images`` and ``encode_texts`` (its ``configure_model`` is called
            when present, e.g. to build the text encoder of a LoRA tower).
        make_metric: builds a fresh ``ImageTextRetrieval`` for each dataset.
        finish: ``finish(module) -> result``, run on every rank at the end of the epoch (collectives inside).
    """

    def __init__(self, model: nn.Module, make_metric, finish) -> None:
        super().__init__()
        for name in ("encode_images", "encode_texts"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"{type(model).__name__} has no {name}(); eval needs a dual-tower model")
        self.model = model
        self._make_metric = make_metric
        self._finish = finish
        self.start("dataset", None)

    def start(self, name: str, cache_texts: list[str] | None) -> None:
        """Reset for dataset ``name``; ``cache_texts`` are embedded into a frozen text tower's cache first."""
        self.dataset_name = name
        self.cache_texts = cache_texts
        self.metric = self._make_metric()
        self.keys: dict[int, str] = {}
        self.texts: dict[int, str] = {}
        self.result = None

    def configure_model(self) -> None:
        configure = getattr(self.model, "configure_model", None)
        if callable(configure):
            configure()

    @property
    def text(self) -> nn.Module | None:
        """The evaluated model's text tower (what :class:`TextCacheFiller` fills), if it has one."""
        return getattr(self.model, "text", None)

    def configure_callbacks(self) -> list[Callback]:
        # Attached again by every Trainer.test call, so each dataset's texts are embedded before it runs.
        return [TextCacheFiller(self.cache_texts)] if self.cache_texts else []

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        if not isinstance(batch, ImageTextBatch):
            raise TypeError(f"dataset {self.dataset_name!r}: the loader must yield ImageTextBatch, got "
                            f"{type(batch).__name__}")
        image_emb = self.model.encode_images(batch.images)
        text_emb = self.model.encode_texts(list(batch.texts))
        self.metric.update(image_emb.float(), text_emb.float(), batch.study_ids, batch.text_ids,
                           batch.sample_index, batch.labels)
        for idx, key, text in zip(batch.sample_index.tolist(), batch.study_keys, batch.texts, strict=True):
            self.keys[idx] = key
            self.texts[idx] = text

    def on_test_epoch_end(self) -> None:
        merged_keys: dict[int, str] = {}
        merged_texts: dict[int, str] = {}
        for keys, texts in gather_objects((self.keys, self.texts)):
            merged_keys.update(keys)
            merged_texts.update(texts)
        self.keys, self.texts = merged_keys, merged_texts
        if not self.keys:
            return
        self.result = self._finish(self)

    def on_test_start(self) -> None:
        for cb in self.trainer.callbacks:
            if isinstance(cb, _DatasetProgressBar):
                cb.label = f"eval {self.dataset_name}"
