"""The project's LightningCLI: model and data are given by ``class_path`` in the YAML configs."""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from cxr.callbacks.settings_check import check_image_settings

log = logging.getLogger(__name__)

#: LightningCLI flags that would replace the modules' optimisers
REFUSED_FLAGS = ("optimizer", "lr_scheduler")


class CXRLightningCLI(LightningCLI):
    """LightningCLI in subclass mode: any cxr LightningModule / DataModule can be named in a config.

    ``--ckpt_path`` is always read with ``torch.load(weights_only=True)``: a checkpoint holding arbitrary pickled
    objects is refused instead of executed (torch's own default depends on its version, Lightning's on the path).
    """

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, {}):
            parser.set_defaults(weights_only=True)
        return parser

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, {}):
            if kwargs.get("weights_only") is False:
                raise ValueError("weights_only=false is refused: checkpoints are loaded with weights_only=True "
                                 "only (an unpickled checkpoint can run arbitrary code)")
            kwargs["weights_only"] = True
        return kwargs

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # LightningCLI's automatic --optimizer/--lr_scheduler would replace the modules' configure_optimizers and
        # silently drop the layer-decay groups and warm-up schedules; they are refused instead (see below).
        for flag in REFUSED_FLAGS:
            parser.add_argument(f"--{flag}", type=Any, default=None,
                                help=f"not supported: set the optimiser through the model's arguments ({flag} is "
                                     f"refused so the modules' parameter groups and schedules are never dropped)")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        given = [flag for flag in REFUSED_FLAGS if config.get(flag) is not None]
        if given:
            raise ValueError(f"--{'/--'.join(given)} is not supported: both LightningModules build their own "
                             f"AdamW with parameter groups (layer decay, no decay on norms/biases/scale) and a "
                             f"warm-up schedule (cxr/models/optim.py), which LightningCLI's optimizer/lr_scheduler "
                             f"would replace; set model.init_args.lr / weight_decay / warmup_steps instead")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Fail at start-up, before any data is read, when model and data disagree on the image geometry.
        check_image_settings(self.model, self.datamodule)

    def before_fit(self) -> None:
        _warn_on_stale_last(self.trainer)


def _warn_on_stale_last(trainer) -> None:
    """Lightning's ModelCheckpoint(monitor=..., save_last=True) only refreshes last.ckpt when the metric improves."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.checkpoint_callbacks:
        if type(cb) is ModelCheckpoint and cb.save_last and cb.monitor:
            log.warning("ModelCheckpoint(monitor=%r, save_last=True) rewrites last.ckpt only when the metric "
                        "improves; use cxr.callbacks.checkpoint.LatestCheckpoint so last.ckpt is the latest state",
                        cb.monitor)


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
        auto_configure_optimizers=False,  # refused with a message instead: see add_arguments_to_parser
        args=args,
        run=run,
    )
