"""Shared pieces of the checkpoint importers: safe loading, key accounting, dtype-aware equality."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch


class KeyFate(str, Enum):
    """What an importer did with one source key. Anything else is an error: no key is silently dropped."""

    LOADED = "loaded"  # copied (renamed/converted) into a weight of the imported model
    VERIFIED = "verified"  # a frozen weight or fixed buffer checked equal to what the imported model has
    ALIAS = "alias"  # a second name of another key's tensor (checked equal)
    INACTIVE_ADAPTER = "inactive_adapter"  # LoRA of a never-active adapter (its B checked zero: a no-op)
    UNUSED_HEAD = "unused_head"  # an LM head next to an encoder (encoders pool hidden states)


class UnmappedKeysError(ValueError):
    """Source keys the importer has no rule for (the list names them)."""


@dataclass
class ImportReport:
    """Fate of every source key, for the importer's report and the tests."""

    source: str
    fates: dict[str, KeyFate] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def mark(self, key: str, fate: KeyFate) -> None:
        if key in self.fates:
            raise RuntimeError(f"importer bug: key {key!r} accounted twice")
        self.fates[key] = fate

    def counts(self) -> dict[str, int]:
        """Keys per fate."""
        return {k.value: v for k, v in Counter(self.fates.values()).items()}

    def check_complete(self, source_keys) -> None:
        """Raise :class:`UnmappedKeysError` unless every source key has a fate."""
        left = sorted(set(source_keys) - set(self.fates))
        if left:
            raise UnmappedKeysError(f"{self.source}: {len(left)} keys have no mapping (e.g. {left[:8]}); the "
                                    f"checkpoint does not have the layout this importer knows")

    def write(self, path: str | Path) -> Path:
        """JSON with the counts, the notes and the keys per fate."""
        by_fate: dict[str, list[str]] = {}
        for key, fate in sorted(self.fates.items()):
            by_fate.setdefault(fate.value, []).append(key)
        path = Path(path)
        path.write_text(json.dumps({"source": self.source, "counts": self.counts(), "notes": self.notes,
                                    "keys": by_fate}, indent=1) + "\n", encoding="utf-8")
        return path


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch file read with ``weights_only=True`` (memory-mapped), with the
    usual containers (``state_dict``, ``module``, ``model``) unwrapped and a DDP/DeepSpeed ``module.`` prefix
    removed. A DeepSpeed ``mp_rank_*`` shard is refused with the consolidation command."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if "mp_rank_" in p.name:
        raise ValueError(f"{p} is a DeepSpeed shard; consolidate first: python -m deepspeed.utils.zero_to_fp32 "
                         f"{p.parent} {p.parent / 'pytorch_model.bin'}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        sd = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    for key in ("state_dict", "module", "model_state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def same_weights(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values, compared in the lower precision of the two (a bf16 checkpoint of fp32 weights)."""
    if a.shape != b.shape:
        return False
    low = a.dtype if a.element_size() <= b.element_size() else b.dtype
    return bool(torch.equal(a.detach().cpu().to(low), b.detach().cpu().to(low)))
