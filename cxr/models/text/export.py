"""Export/import of adapted text encoders in Hugging Face format, and import of the authors' LLM2Vec4CXR layout.

An export directory holds the backbone (``config.json`` + ``model.safetensors``, LoRA merged, or the unmerged
base with the adapter in ``adapter/``), the tokenizer, ``cxr_text_encoder.json`` (pooling/instruction settings)
and, for latent-attention pooling, ``pooling.safetensors``. ``TextEncoder.from_pretrained(export_dir)``
reloads it.
The authors' released checkpoint instead stores the pooling head inside the model safetensors as ``latent_attn.*``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cxr.models.text.lora import is_peft_model

if TYPE_CHECKING:
    from cxr.models.text.encoder import TextEncoder

EXPORT_CONFIG_NAME = "cxr_text_encoder.json"
POOLING_WEIGHTS_NAME = "pooling.safetensors"
ADAPTER_DIR_NAME = "adapter"
AUTHORS_LATENT_PREFIX = "latent_attn."
EXPORT_FORMAT_VERSION = 1


@dataclass
class ExportConfig:
    """Contents of ``cxr_text_encoder.json``."""

    pooling: str
    max_length: int
    instruction: str | None
    skip_instruction: bool
    bidirectional: bool
    latent_num_latents: int | None = None
    latent_num_heads: int | None = None
    adapter_dir: str | None = None
    adapter_name: str | None = None
    instruction_format: str = "cxr"
    pool_special_tokens: bool = False
    source_model: str | None = None  # the original model name llm2vec's name-keyed input rules use
    format_version: int = EXPORT_FORMAT_VERSION


def read_export_config(model_dir: str | Path) -> ExportConfig | None:
    """Read ``cxr_text_encoder.json`` from ``model_dir`` (None if absent); unknown keys are an error."""
    path = Path(model_dir) / EXPORT_CONFIG_NAME
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    try:
        cfg = ExportConfig(**data)
    except TypeError as err:
        raise ValueError(f"{path}: unexpected fields ({err})") from err
    if cfg.format_version > EXPORT_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {cfg.format_version} is newer than supported "
                         f"({EXPORT_FORMAT_VERSION})")
    return cfg


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    return sorted(model_dir.glob("*.safetensors"))


def find_authors_latent_weights(model_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The ``latent_attn.*`` pooling tensors of an authors'-layout checkpoint (prefix stripped), or None."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return None
    found: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(model_dir):
        if file.name == POOLING_WEIGHTS_NAME:
            continue
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.startswith(AUTHORS_LATENT_PREFIX):
                    found[key[len(AUTHORS_LATENT_PREFIX):]] = f.get_tensor(key)
    return found or None


def read_pooling_weights(model_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """Pooling-head weights of ``model_dir``: our ``pooling.safetensors`` or the authors' ``latent_attn.*``."""
    from safetensors.torch import load_file

    ours = Path(model_dir) / POOLING_WEIGHTS_NAME
    if ours.is_file():
        return load_file(str(ours))
    return find_authors_latent_weights(model_dir)


def export_text_encoder(encoder: TextEncoder, out_dir: str | Path, *, merge_lora: bool = True) -> Path:
    """Save ``encoder`` so that ``TextEncoder.from_pretrained(out_dir)`` reproduces its embeddings.

    ``merge_lora=True`` folds a LoRA adapter into the weights (plain HF model); ``False`` keeps the unmerged base
    plus ``adapter/`` (peft format). The live encoder is not modified. A plain (merged) export also gets the
    sentence-transformers files (``cxr.models.text.interop``), so ``SentenceTransformer`` and ``AutoModel`` load it
    with the same embeddings.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapter_dir = adapter_name = None
    if is_peft_model(encoder.model):
        if merge_lora:
            copy.deepcopy(encoder.model).merge_and_unload().save_pretrained(out, safe_serialization=True)
        else:
            adapter_name = encoder.model.active_adapter
            # unload() removes LoRA layers without merging; work on a copy so the live encoder keeps its adapter
            copy.deepcopy(encoder.model).unload().save_pretrained(out, safe_serialization=True)
            encoder.model.save_pretrained(out / ADAPTER_DIR_NAME, selected_adapters=[adapter_name])
            # peft nests non-default adapters under their name
            adapter_dir = ADAPTER_DIR_NAME if adapter_name == "default" else f"{ADAPTER_DIR_NAME}/{adapter_name}"
    else:
        encoder.model.save_pretrained(out, safe_serialization=True)
    encoder.tokenizer.save_pretrained(out)
    latent = encoder.latent_pooling
    if latent is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in latent.state_dict().items()},
                  str(out / POOLING_WEIGHTS_NAME))
    cfg = ExportConfig(pooling=encoder.pooling.value, max_length=encoder.max_length,
                       instruction=encoder.instruction, skip_instruction=encoder.skip_instruction,
                       bidirectional=encoder.bidirectional,
                       latent_num_latents=None if latent is None else int(latent.latents.shape[0]),
                       latent_num_heads=None if latent is None else int(latent.multihead_attn.num_heads),
                       adapter_dir=adapter_dir, adapter_name=adapter_name,
                       instruction_format=encoder.instruction_format.value,
                       pool_special_tokens=encoder.pool_special_tokens, source_model=encoder.source_model)
    (out / EXPORT_CONFIG_NAME).write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    if adapter_dir is None:  # a plain HF model: sentence-transformers / AutoModel can load it as it is
        from cxr.models.text.interop import write_interop_files

        write_interop_files(encoder, out)
    return out
