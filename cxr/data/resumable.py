"""A training DataLoader whose position in the epoch is part of Lightning's checkpoint (exact mid-epoch resume).

Lightning 2.6's fit loop saves ``state_dict()`` of every train loader that has ``state_dict``/``load_state_dict``
(``_Stateful``) under ``loops.fit_loop.state_dict.combined_loader`` and hands it back to ``load_state_dict``
before the resumed epoch is iterated. A plain DataLoader has no state, so a run resumed mid-epoch restarted the
epoch from its first batch and its weights diverged from an uninterrupted run.

:class:`ResumableDataLoader` records, in the main process, the epoch of the current pass and how many batches it
has handed to the loop. The loop does not prefetch from a loader with a length, so at a checkpoint saved in
``on_train_batch_end`` of step ``k`` that count is exactly the batches trained on. On resume the sampler
(:class:`~cxr.data.sampling.SeededSampler` or :class:`~cxr.data.pairs.task_sampler.TaskBatchSampler`) starts at
that epoch and skips those draws without loading them; any other sampler (e.g. Lightning's DDP wrapper) is
fast-forwarded by fetching and dropping batches, which is exact but loads the skipped data.

The global RNG streams (torch, CUDA, numpy, Python) at the save point are stored too and restored just before the
first resumed batch is fetched (after the iterator, and any workers, were created: creating it draws a base seed),
so dropout and other global draws continue exactly where the killed run was.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


def collect_rng_state() -> dict[str, Any]:
    """The global RNG states as tensors/lists/ints only, so checkpoints still load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                                       int(has_gauss), float(gauss)],
                             "python": [int(version), list(internal), gauss_py]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = state["python"]
    random.setstate((version, tuple(internal), gauss_py))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumableDataLoader(DataLoader):
    """``DataLoader`` with Lightning's ``state_dict``/``load_state_dict``: the position in the epoch and the RNG.

    Takes exactly the arguments of :class:`torch.utils.data.DataLoader` (so Lightning can re-create it, e.g.
    when it injects a distributed sampler).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pass_epoch: int | None = None
        self._batches_done = 0
        self._pending: dict[str, Any] | None = None

    def _position_sampler(self) -> Any | None:
        """The sampler that can start mid-epoch itself (has ``start_at``), or None."""
        for candidate in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None), self.sampler):
            if hasattr(candidate, "start_at"):
                return candidate
        return None

    def _samples_per_batch(self, sampler: Any) -> int:
        # a batch sampler skips batches; a sample sampler under a BatchSampler skips batch_size samples per batch
        return 1 if sampler is self.batch_sampler else int(self.batch_size or 1)

    def state_dict(self) -> dict[str, Any]:
        """Epoch of the current pass, batches handed out from it, and the global RNG state now."""
        epoch = self._pass_epoch
        if epoch is None:  # no pass started yet: the next pass's epoch
            epoch = int(getattr(self._position_sampler() or self.sampler, "epoch", 0))
        return {"epoch": int(epoch), "batches": int(self._batches_done), "rng": collect_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the next pass at the saved position (a finished pass resumes at the start of the next epoch)."""
        state = dict(state_dict)
        if state["batches"] >= len(self):
            state["epoch"], state["batches"] = state["epoch"] + 1, 0
        self._pending = state

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        sampler = self._position_sampler()
        skip = int(pending["batches"]) if pending else 0
        fast_forward = 0
        if pending is not None:
            if sampler is not None:
                sampler.start_at(int(pending["epoch"]), skip * self._samples_per_batch(sampler))
            else:
                fast_forward = skip
                log.warning("resuming mid-epoch by fetching and dropping %d batches (sampler %s cannot skip)",
                            skip, type(self.sampler).__name__)
        self._pass_epoch = int(getattr(sampler, "epoch", 0)) if sampler is not None else None
        self._batches_done = skip
        iterator = super().__iter__()
        for _ in range(fast_forward):
            next(iterator)
        if pending is not None and "rng" in pending:
            restore_rng_state(pending["rng"])
        for batch in iterator:
            self._batches_done += 1
            yield batch
