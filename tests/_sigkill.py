"""A callback that SIGKILLs its own process after a training step: a real ``kill -9`` mid-epoch, for resume tests.

Checkpoint callbacks run after every other callback in ``on_train_batch_end``, so killing at step ``k`` loses
step ``k`` (and every step since the last periodic checkpoint), as a crash would.
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class SigkillAtStep(pl.Callback):
    """SIGKILL this process at the end of optimiser step ``step`` (before that step is checkpointed)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
