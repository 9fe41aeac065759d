"""Load a trained dual-tower module (e.g. ``CLIPAlignModule``) from a Lightning checkpoint, safely."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningModule


def load_checkpoint_model(checkpoint: str | Path, map_location: str = "cpu") -> LightningModule:
    """Rebuild the LightningModule of a ``train.py`` checkpoint and load its weights.

    LightningCLI (subclass mode) stores ``_class_path``/``_instantiator`` in ``hyper_parameters``, so the base
    ``LightningModule.load_from_checkpoint`` can rebuild the right class. The file is read with
    ``weights_only=True`` (no arbitrary pickles). The module must expose ``encode_images(images)`` and
    ``encode_texts(texts)``.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _import_project_class(path)
    try:
        model = LightningModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except NotImplementedError as err:
        raise ValueError(f"{path}: checkpoint has no '_class_path' hyper-parameters (not saved by train.py's "
                         f"LightningCLI?), cannot rebuild the module: {err}") from err
    for name in ("encode_images", "encode_texts"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"{path}: {type(model).__name__} has no {name}(); eval needs a dual-tower module")
    model.eval()
    return model


def _import_project_class(path: Path) -> None:
    """Import the module class named by the checkpoint, if it is one of this project's (``cxr.*``).

    Lightning refuses to rebuild a class that is not imported yet (it will not import arbitrary code named by a
    file); importing our own package is safe, anything else stays refused.
    """
    import importlib

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path", "")
    if isinstance(class_path, str) and class_path.startswith("cxr.") and "." in class_path:
        importlib.import_module(class_path.rsplit(".", 1)[0])


def prepare_model(model: LightningModule, device: str | torch.device = "cpu") -> LightningModule:
    """Build lazily-created parts (``configure_model``), move to ``device`` and switch to eval mode."""
    configure = getattr(model, "configure_model", None)
    if callable(configure):
        configure()
    return model.to(device).eval()
