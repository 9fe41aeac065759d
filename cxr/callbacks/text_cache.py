"""Fill a frozen text tower's embedding cache before a run: the one cross-object job between model and data.

The texts come from the DataModule (``texts(split)`` for the splits the stage reads) or are given explicitly
(``eval.py`` passes each held-out dataset's texts). The callback also refuses the one combination that cannot
work: a cached tower with online sentence shuffling, whose texts are new every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, LightningModule, Trainer

#: Lightning stage -> the DataModule splits whose texts that stage embeds.
STAGE_SPLITS: dict[str, tuple[str, ...]] = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                                            "predict": ("test",)}


class TextCacheFiller(Callback):
    """Embeds the texts a stage will read into ``pl_module.text``'s cache at ``setup``.

    Args:
        texts: the texts to embed; ``None`` takes them from ``trainer.datamodule.texts(split)``.

    ``pl_module.text`` is the text tower (``cxr.models.text.tower.TextTower``); nothing happens when the module
    has none or the tower does not use a cache. ``setup`` runs before Lightning moves the module, so the
    encoder runs on the strategy's device.
    """

    def __init__(self, texts: Sequence[str] | None = None) -> None:
        self.texts = list(texts) if texts is not None else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        tower = getattr(pl_module, "text", None)
        if tower is None or not getattr(tower, "uses_cache", False):
            return
        dm = trainer.datamodule
        if dm is not None and float(getattr(dm, "shuffle_prob", 0.0) or 0.0) > 0:
            raise ValueError("text.use_cache=true cannot be combined with data.shuffle_prob > 0: shuffled "
                             "reports are new texts every epoch; set one of them off")
        texts = self.texts
        if texts is None:
            if dm is None or not hasattr(dm, "texts"):
                return
            texts = [t for split in STAGE_SPLITS.get(stage, ()) for t in dm.texts(split)]
        if texts:
            tower.fill_cache(texts, device=trainer.strategy.root_device)
