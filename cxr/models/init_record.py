"""A tower's constructor arguments as a ``class_path``/``init_args`` record, and the tower rebuilt from one.

``CLIPAlignModule`` stores the records of its two towers in its hyper-parameters, so
``CLIPAlignModule.load_from_checkpoint(path)`` rebuilds them whether the module came from ``train.py`` or from
Python (no private Lightning API decides which). The record has the shape of a LightningCLI config section, so
Lightning's CLI instantiator and :func:`build_from_record` both read it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from enum import Enum
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with enums as member names, dataclasses as dicts and paths as strings (YAML/JSON-safe)."""
    if isinstance(value, Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def init_record(obj: object, arguments: dict[str, Any]) -> dict[str, Any]:
    """The record of ``obj`` built with ``arguments`` (pass ``locals()`` first thing in ``__init__``)."""
    cls = type(obj)
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {n: plain(arguments[n]) for n in names if n in arguments}}


def build_from_record(record: dict[str, Any], expected: type) -> Any:
    """Rebuild an ``expected`` instance (or subclass) from its record; only ``cxr`` classes are imported."""
    class_path = record.get("class_path", "")
    if not class_path.startswith("cxr."):
        raise ValueError(f"refusing to import {class_path!r}: only cxr classes are rebuilt from a checkpoint")
    importlib.import_module(class_path.rsplit(".", 1)[0])
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--obj", type=expected)
    built = parser.instantiate_classes(parser.parse_object({"obj": record})).obj
    if not isinstance(built, expected):
        raise TypeError(f"{class_path} is not a {expected.__name__}")
    return built
