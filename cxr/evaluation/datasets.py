"""Held-out evaluation datasets given as YAML specs: a DataModule config or a single dataset source.

A spec file holds ``class_path``/``init_args`` of either

* a ``LightningDataModule`` (e.g. ``cxr.data.datamodule.CXRDataModule``), or the ``data:`` section of a
  ``train.py`` config, or
* a :class:`~cxr.data.sources.base.DatasetSource` (e.g. ``cxr.data.sources.CsvManifestSource``), which is
  wrapped in a ``CXRDataModule`` as its only held-out (``eval_sources``) source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from lightning.pytorch import LightningDataModule


@dataclass(frozen=True)
class EvalDatasetSpec:
    """A named held-out dataset: ``name=path/to/spec.yaml`` on the command line."""

    name: str
    config: Path

    @classmethod
    def parse(cls, text: str) -> EvalDatasetSpec:
        if "=" in text:
            name, path = text.split("=", 1)
        else:
            path = text
            name = Path(text).stem
        if not name.strip():
            raise ValueError(f"dataset spec {text!r} has an empty name (use NAME=PATH)")
        return cls(name=name.strip(), config=Path(path.strip()))


def _class_config(spec: EvalDatasetSpec) -> dict:
    if not spec.config.is_file():
        raise FileNotFoundError(f"dataset {spec.name!r}: spec file not found: {spec.config}")
    with open(spec.config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    if isinstance(cfg, dict) and "data" in cfg and "class_path" not in cfg:
        cfg = cfg["data"]  # a full train.py config
    if not isinstance(cfg, dict) or "class_path" not in cfg:
        raise ValueError(f"dataset {spec.name!r}: {spec.config} must hold 'class_path' (+ 'init_args') of a "
                         f"LightningDataModule or a DatasetSource, or a train config with a 'data' section")
    return cfg


def parse_eval_spec(spec: EvalDatasetSpec):
    """Check ``spec`` against the schema of its class (jsonargparse), without instantiating it.

    Returns ``(parser, parsed)``; nothing is read from the dataset itself.
    """
    import importlib

    from jsonargparse import ArgumentParser

    from cxr.data.sources.base import DatasetSource

    cfg = _class_config(spec)
    module_name, _, class_name = str(cfg["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"dataset {spec.name!r}: cannot import {cfg['class_path']!r} ({spec.config})") from err
    if not (isinstance(cls, type) and issubclass(cls, (LightningDataModule, DatasetSource))):
        raise ValueError(f"dataset {spec.name!r}: {cfg['class_path']!r} is neither a LightningDataModule nor a "
                         f"DatasetSource")
    base = DatasetSource if issubclass(cls, DatasetSource) else LightningDataModule
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "obj", required=True)
    try:
        return parser, parser.parse_object({"obj": cfg})
    except Exception as err:  # jsonargparse errors are long; name the spec first
        raise ValueError(f"dataset {spec.name!r}: cannot build {cfg.get('class_path')!r} from {spec.config}: "
                         f"{err}") from err


def build_eval_datamodule(spec: EvalDatasetSpec, **datamodule_overrides) -> LightningDataModule:
    """Instantiate the spec's DataModule (or wrap its source in a ``CXRDataModule``) with jsonargparse."""
    from cxr.data.sources.base import DatasetSource

    parser, parsed = parse_eval_spec(spec)
    try:
        obj = parser.instantiate_classes(parsed).obj
    except Exception as err:
        raise ValueError(f"dataset {spec.name!r}: cannot build {parsed.obj.class_path!r} from {spec.config}: "
                         f"{err}") from err
    if isinstance(obj, DatasetSource):
        from cxr.data.datamodule import CXRDataModule

        return CXRDataModule(sources=[], eval_sources=[obj], **datamodule_overrides)
    return obj
