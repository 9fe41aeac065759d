"""Settings that the model and the DataModule must agree on, checked once both exist.

The vision tower's ``image_size``/``in_chans`` and the DataModule's are written in two config sections; a config
that sets them differently (``fit --config configs/demo.yaml --data configs/data/mimic_cxr_jpg.yaml``: 128 vs
448) used to train at the data's size while the tower and every later evaluation said the model's. Both values
are named in the error so the user can pick one.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer

#: (attribute on the vision tower and the DataModule, config key under ``data``)
LINKED_IMAGE_SETTINGS = ("image_size", "in_chans")


def check_image_settings(model: object, datamodule: object) -> None:
    """Raise ``ValueError`` naming both values when the model's vision tower and the DataModule disagree.

    Only objects that carry the settings are compared: a module without a ``vision`` tower or a DataModule
    without ``image_size`` (e.g. LLM2VEC4CXR pair data) has nothing to link.
    """
    vision = getattr(model, "vision", None)
    if vision is None or datamodule is None:
        return
    diffs = [f"data.{name}={getattr(datamodule, name)} but model.vision.{name}={getattr(vision, name)}"
             for name in LINKED_IMAGE_SETTINGS
             if hasattr(datamodule, name) and hasattr(vision, name)
             and getattr(datamodule, name) != getattr(vision, name)]
    if diffs:
        raise ValueError("the DataModule and the vision tower disagree: " + "; ".join(diffs)
                         + " (set both to the same value: the tower is built for its size and channels)")


class ImageSettingsCheck(Callback):
    """Runs :func:`check_image_settings` at ``setup`` for any Trainer (the CLI also checks right after parsing)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_image_settings(pl_module, trainer.datamodule)



