"""Import the authors' LLM2VEC4CXR text encoder (HF ``lukeingawesome/llm2vec4cxr`` layout) into a ``cxr`` export.

    huggingface-cli download lukeingawesome/llm2vec4cxr --local-dir hf/llm2vec4cxr
    python -m cxr.models.importers.llm2vec4cxr --src hf/llm2vec4cxr --out imported/llm2vec4cxr

The HF folder holds ``config.json`` (a Llama config), the tokenizer, ``model.safetensors`` with the bidirectional
Llama (``LLM2Vec4CXRModel(LlamaBiModel)``: bare ``embed_tokens``/``layers``/``norm`` keys, or ``model.``-prefixed
when saved from a wrapper) **and** the pooling head ``latent_attn.*`` (512 latents, 8 heads), optionally
``llm2vec_config.json`` (pooling mode, max length) and remote code (``modeling_llm2vec4cxr.py``, not needed and
never run). The older Google-Drive release is one ``pytorch_model.bin`` of the same tensors: give it with
``--weights`` and a folder with the config/tokenizer as ``--src``.

Every tensor must map: backbone keys onto the Llama built from ``config.json`` (all of it, shapes equal),
``latent_attn.*`` onto :class:`~cxr.models.text.pooling.LatentAttentionPooling` (strict), a ``lm_head`` is noted
and left out (an encoder pools hidden states). The output is a normal ``cxr`` text-encoder export:
``TextEncoder.from_pretrained(out)`` / ``text.encoder: out`` loads it bidirectional, with latent-attention
pooling and ``max_length`` 512.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from cxr.models.importers.common import ImportReport, KeyFate, UnmappedKeysError, load_state_dict_file

log = logging.getLogger(__name__)

LATENT_PREFIX = "latent_attn."
LATENT_HEADS = 8  # LLM2Vec4CXR: nn.MultiheadAttention(d, num_heads=8); the shapes do not tell the head count
COPIED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "tokenizer.model", "generation_config.json", "added_tokens.json", "vocab.json", "merges.txt")


def read_weights(src: Path, weights: Path | None = None) -> dict[str, torch.Tensor]:
    """All tensors of the HF folder (``*.safetensors``, sharded or not, else ``pytorch_model.bin``) or ``weights``."""
    if weights is not None:
        return load_state_dict_file(weights)
    files = sorted(src.glob("*.safetensors"))
    if not files and (src / "pytorch_model.bin").is_file():
        files = [src / "pytorch_model.bin"]
    if not files:
        raise FileNotFoundError(f"{src}: no *.safetensors or pytorch_model.bin (give a weights file with --weights)")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_state_dict_file(f))
    return out


def _reference_backbone(src: Path):
    """The Llama ``config.json`` describes, on the meta device (names and shapes only, no memory)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(src))  # never trust_remote_code: the config is a plain Llama one
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return config, {k: tuple(v.shape) for k, v in model.state_dict().items()}


def map_weights(sd: dict[str, torch.Tensor], expected: dict[str, tuple], report: ImportReport):
    """``(backbone tensors with bare names, latent-attention tensors)``; every key gets a fate in ``report``."""
    backbone: dict[str, torch.Tensor] = {}
    latent: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(LATENT_PREFIX):
            latent[key[len(LATENT_PREFIX):]] = value
            report.mark(key, KeyFate.LOADED)
        elif key == "lm_head.weight":
            report.mark(key, KeyFate.UNUSED_HEAD)
            report.notes.append("lm_head.weight left out: the encoder pools hidden states")
        else:
            bare = key[len("model."):] if key.startswith("model.") and key[len("model."):] in expected else key
            if bare in expected:
                if tuple(value.shape) != expected[bare]:
                    raise ValueError(f"{key}: shape {tuple(value.shape)}, the config's model has {expected[bare]}")
                backbone[bare] = value
                report.mark(key, KeyFate.LOADED)
    report.check_complete(sd)
    missing = sorted(set(expected) - set(backbone))
    if missing:
        raise UnmappedKeysError(f"{report.source}: {len(missing)} backbone weights missing (e.g. {missing[:6]})")
    return backbone, latent


def _latent_head(latent: dict[str, torch.Tensor], hidden: int, source: str):
    from cxr.models.text.pooling import LatentAttentionPooling

    if "latents" not in latent:
        raise UnmappedKeysError(f"{source}: latent_attn.* without latent_attn.latents")
    head = LatentAttentionPooling(hidden, num_latents=int(latent["latents"].shape[0]), num_heads=LATENT_HEADS)
    try:
        head.load_state_dict(latent, strict=True)
    except RuntimeError as err:
        raise UnmappedKeysError(f"{source}: latent_attn.* do not fit the latent-attention head: {err}") from None
    return head


def _settings(src: Path) -> dict:
    path = src / "llm2vec_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def import_llm2vec4cxr(src: str | Path, out: str | Path, weights: str | Path | None = None) -> ImportReport:
    """Convert the HF folder ``src`` (or ``weights`` with ``src``'s config/tokenizer) into the export ``out``."""
    from safetensors.torch import save_file

    from cxr.models.text.export import EXPORT_CONFIG_NAME, POOLING_WEIGHTS_NAME, ExportConfig
    from cxr.models.text.pooling import PoolingMode

    src, out = Path(src), Path(out)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (the HF folder of lukeingawesome/llm2vec4cxr)")
    report = ImportReport(source=str(weights or src))
    sd = read_weights(src, Path(weights) if weights else None)
    config, expected = _reference_backbone(src)
    backbone, latent = map_weights(sd, expected, report)
    settings = _settings(src)
    pooling = PoolingMode(settings.get("pooling_mode", "latent_attention" if latent else "mean"))
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("auto_map", None)  # the remote code is not needed: a plain Llama loads these weights
    cfg["architectures"] = ["LlamaModel"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in backbone.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    head = None
    if latent:
        head = _latent_head(latent, int(config.hidden_size), report.source)
        save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()},
                  str(out / POOLING_WEIGHTS_NAME))
    elif pooling is PoolingMode.LATENT_ATTENTION:
        raise UnmappedKeysError(f"{report.source}: pooling_mode latent_attention but no latent_attn.* weights")
    export = ExportConfig(pooling=pooling.value, max_length=int(settings.get("max_length", 512)), instruction=None,
                          skip_instruction=bool(settings.get("skip_instruction", True)), bidirectional=True,
                          latent_num_latents=None if head is None else int(head.latents.shape[0]),
                          latent_num_heads=None if head is None else LATENT_HEADS)
    (out / EXPORT_CONFIG_NAME).write_text(json.dumps(asdict(export), indent=2) + "\n")
    report.notes.append(f"pooling={pooling.value}, max_length={export.max_length}, bidirectional")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cxr.models.importers.llm2vec4cxr",
                                description="Import the authors' LLM2VEC4CXR (HF layout) as a cxr text encoder")
    p.add_argument("--src", required=True, help="HF folder (config.json, tokenizer, model.safetensors)")
    p.add_argument("--weights", default=None, help="a pytorch_model.bin/.safetensors with the tensors instead")
    p.add_argument("--out", required=True, help="output folder (a cxr text-encoder export)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = import_llm2vec4cxr(args.src, args.out, args.weights)
    path = report.write(Path(args.out) / "import_report.json")
    sys.stdout.write(f"imported {len(report.fates)} keys {report.counts()} -> {args.out} (report {path})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
