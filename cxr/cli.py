"""The project's LightningCLI: model and data are given by ``class_path`` in the YAML configs."""

from __future__ import annotations

import os

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI


class CXRLightningCLI(LightningCLI):
    """LightningCLI in subclass mode: any cxr LightningModule / DataModule can be named in a config."""


def cli_main(args: ArgsType = None, run: bool = True) -> CXRLightningCLI:
    """Entry point of ``train.py``; ``args`` (a list of strings or a dict) makes it callable from tests."""
    # albumentations otherwise checks PyPI for a newer version at import time.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return CXRLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
