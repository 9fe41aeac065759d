"""``ModelCheckpoint`` whose ``last.ckpt`` is always the latest training state.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` at the end of an epoch only
when a top-k checkpoint was saved at that step, i.e. only when the monitored metric improved. A run whose metric
plateaus therefore leaves an old epoch in ``last.ckpt``: ``eval.py`` on ``last.ckpt`` evaluates a stale model and
``--ckpt_path last`` resumes from it, silently repeating epochs. :class:`LatestCheckpoint` keeps the top-k logic
and additionally writes ``last.ckpt`` at every point where Lightning would consider saving (epoch end, and every
``every_n_train_steps``), independent of the metric.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class LatestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with ``save_last=True`` by default and ``last.ckpt`` decoupled from the metric.

    All arguments are those of :class:`lightning.pytorch.callbacks.ModelCheckpoint`; ``save_last`` defaults to
    ``True`` (``"link"`` is refused: a link points at the best top-k file, not at the latest state).
    """

    def __init__(self, *args, save_last: bool | None = True, **kwargs) -> None:
        if save_last == "link":
            raise ValueError("LatestCheckpoint: save_last='link' would make last.ckpt point at the best top-k "
                             "checkpoint, not at the latest state; use save_last=True")
        super().__init__(*args, save_last=save_last, **kwargs)
        self._last_written_step: int | None = None

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _ensure_last(self, trainer: pl.Trainer, at_train_epoch_end: bool) -> None:
        """Write ``last.ckpt`` for this step if the parent's hook left it out (metric did not improve)."""
        from lightning.pytorch.trainer.states import TrainerFn

        if not self.save_last or self._last_written_step == trainer.global_step:
            return
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        # The parent saves at train-epoch end or at validation end, never both; follow the same choice.
        if self._should_save_on_train_epoch_end(trainer) != at_train_epoch_end:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._ensure_last(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._ensure_last(trainer, at_train_epoch_end=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # max_steps can stop mid-epoch after the last save point: the final state still goes to last.ckpt.
        if self.save_last and self._last_written_step != trainer.global_step and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
