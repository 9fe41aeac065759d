"""Import the authors' released ``llm2clip4cxr.bin`` into a ``CLIPAlignModule`` checkpoint that ``eval.py`` loads.

    python -m cxr.models.importers.llm2clip4cxr --checkpoint llm2clip4cxr.bin \
        --text-encoder imported/llm2vec4cxr --out imported/llm2clip4cxr.ckpt

The released file is the state dict of the authors' ``CustomCLIP`` (``lukeingawesome/llm2clip4cxr``,
``training/main.py``): an EVA02-CLIP-L/14 ``visual`` tower (448 px, ``head`` = the 1024→1280 projection), the text
tower ``text`` = ``LLM2VecWithProj`` (``core`` = LLM2Vec with the peft-wrapped bidirectional Llama and the
``latent_attn`` pooling head, also reachable as ``model``; ``projection`` = LayerNorm + Linear) and
``logit_scale``. Mapping:

============================================  =====================================================================
``visual.*`` (EVA-CLIP names)                 timm ``eva02_large_patch14_clip_336`` at the checkpoint's size, renamed
                                              by timm's ``checkpoint_filter_fn``; RoPE tables checked, not loaded
``visual.head.*``                             ``image_proj``
``text.projection.0.*`` / ``.1.*``            ``text_adapter.norm`` / ``text_adapter.proj`` (``ln_linear``)
``text.core.model.base_model.model.…``        LoRA of the active adapter (default ``llm2clip``) → the text tower's
``…lora_{A,B}.<adapter>.weight``              LoRA (r from the shapes, alpha = 2r as the authors' r16/α32)
other ``text.core.*`` (frozen base,           checked equal to the text encoder's own weights (``--text-encoder``),
``latent_attn.*``)                            which the imported model loads from its files
``text.model.*``                              the same tensors under the alias name (checked equal)
``…lora_*.default.*``                         peft's never-active ``default`` adapter (its ``lora_B`` checked zero)
``logit_scale``                               ``logit_scale`` (the authors' raw scale: ``exp_scale: false``)
============================================  =====================================================================

Any other key is an error. The imported module scores like the authors' ``retrieval.py --similarity clip``:
raw dot products of unnormalised features (``loss.normalize: false``); the text tower runs online with the LoRA
(``use_cache: false``) and instructions chosen per report (``instruction: auto``).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cxr.models.importers.common import (
    ImportReport,
    KeyFate,
    UnmappedKeysError,
    load_state_dict_file,
    same_weights,
)
from cxr.models.importers.eva_clip import EVA02_CLIP_L, convert_visual, read_architecture

log = logging.getLogger(__name__)

_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
TEXT_PREFIXES = ("text.core.", "text.model.")  # LLM2VecWithProj keeps the core under both names


@dataclass(frozen=True)
class ImportOptions:
    """Choices the weights cannot tell.

    Args:
        text_encoder: the LLM2VEC4CXR text encoder folder (``cxr.models.importers.llm2vec4cxr`` output, or the HF
            snapshot of ``lukeingawesome/llm2vec4cxr``); the imported model loads the frozen text weights from it.
        adapter_name: the LoRA adapter the authors trained (``llm2clip``); used when present, else the only one.
        lora_alpha: LoRA alpha (None: 2·r, the authors' r16/α32).
        lora_dropout: LoRA dropout (inactive in evaluation; the authors trained with 0.1).
        torch_dtype: weights dtype of the frozen text encoder (the authors: ``bfloat16``).
        max_length: text token limit (512).
        vision_model: timm model the visual tower maps to.
        image_size: model input size (None: the checkpoint's; another size resamples the position embeddings).
        verify_frozen: check the checkpoint's frozen text weights against the text encoder's.
    """

    text_encoder: str
    adapter_name: str = "llm2clip"
    lora_alpha: int | None = None
    lora_dropout: float = 0.1
    torch_dtype: str | None = "bfloat16"
    max_length: int = 512
    vision_model: str = EVA02_CLIP_L
    image_size: int | None = None
    verify_frozen: bool = True


@dataclass
class TextParts:
    """The text-side keys sorted by role (suffixes are relative to ``text.core.``)."""

    lora: dict[str, tuple[str, torch.Tensor]]  # our module key -> (source key, tensor)
    frozen: dict[str, tuple[str, torch.Tensor]]  # our module key -> (source key, tensor)
    inactive: list[tuple[str, torch.Tensor]]
    rank: int | None
    targets: list[str]


def _split_text(sd: dict[str, torch.Tensor], report: ImportReport) -> dict[str, tuple[str, torch.Tensor]]:
    """``suffix -> (primary source key, tensor)`` of the text core; alias copies are checked and marked."""
    primary: dict[str, tuple[str, torch.Tensor]] = {}
    for prefix in TEXT_PREFIXES:  # text.core first: it is the primary name
        for key, value in sd.items():
            if not key.startswith(prefix):
                continue
            suffix = key[len(prefix):]
            if suffix in primary:
                if not same_weights(primary[suffix][1], value):
                    raise ValueError(f"{key} differs from {primary[suffix][0]}: the aliases must hold one tensor")
                report.mark(key, KeyFate.ALIAS)
            else:
                primary[suffix] = (key, value)
    return primary


def _choose_adapter(suffixes, wanted: str) -> str | None:
    names = {m.group("adapter") for s in suffixes if (m := _LORA.match(s))}
    if not names:
        return None
    if wanted in names:
        return wanted
    if len(names) == 1:
        return names.pop()  # e.g. saved under peft's 'default' (the authors' retrieval.py remaps it too)
    raise ValueError(f"LoRA adapters {sorted(names)} in the checkpoint and none is {wanted!r}; pass --adapter-name")


def sort_text(core: dict[str, tuple[str, torch.Tensor]], adapter: str | None, ours: str) -> TextParts:
    """Sort the text-core tensors: LoRA of ``adapter`` (renamed to our adapter ``ours``), frozen, inactive."""
    parts = TextParts(lora={}, frozen={}, inactive=[], rank=None, targets=[])
    targets: set[str] = set()
    for suffix, (key, value) in core.items():
        match = _LORA.match(suffix)
        if match is None:
            # frozen: the base model (peft's base_layer included) and the latent-attention pooling head
            mapped = suffix.replace("latent_attn.", "latent_pooling.", 1) if suffix.startswith("latent_attn.") \
                else suffix
            parts.frozen["text.encoder." + mapped] = (key, value)
        elif match.group("adapter") == adapter:
            parts.lora[f"text.encoder.{match.group('module')}.lora_{match.group('ab')}.{ours}.weight"] = (key, value)
            targets.add(match.group("module").rsplit(".", 1)[-1])
            if match.group("ab") == "A":
                parts.rank = int(value.shape[0])
        else:
            parts.inactive.append((key, value))
    parts.targets = sorted(targets)
    return parts


def _vision_init_args(arch, options: ImportOptions) -> dict:
    args = {"model_name": options.vision_model, "pretrained": False, "in_chans": arch.in_chans,
            "image_size": options.image_size or arch.image_size}
    extra = arch.timm_kwargs() if options.vision_model == EVA02_CLIP_L else {}
    if extra:
        args["model_kwargs"] = extra
    return args


def build_hparams(sd: dict[str, torch.Tensor], parts: TextParts, options: ImportOptions) -> dict:
    """The ``CLIPAlignModule`` hyper-parameters (LightningCLI form) that fit the checkpoint's shapes."""
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    arch = read_architecture({k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")})
    embed_dim = int(sd["text.projection.1.weight"].shape[0])
    if arch.head_dim_out is not None and arch.head_dim_out != embed_dim:
        raise ValueError(f"visual.head gives {arch.head_dim_out}-d image embeddings, text.projection {embed_dim}-d")
    lora = None
    if parts.lora:
        lora = {"r": parts.rank, "alpha": options.lora_alpha or 2 * parts.rank, "dropout": options.lora_dropout,
                "target_modules": parts.targets, "adapter_name": options.adapter_name}
    latent = any(k.startswith("text.encoder.latent_pooling.") for k in parts.frozen)
    text_args = {"model_name_or_path": str(Path(options.text_encoder).resolve()), "max_length": options.max_length,
                 "pooling": "LATENT_ATTENTION" if latent else None, "torch_dtype": options.torch_dtype,
                 "adapter": "LN_LINEAR", "lora": lora, "use_cache": False, "instruction": "auto",
                 "embedding_dim": int(sd["text.projection.1.weight"].shape[1])}

    def path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    return {"_class_path": path(CLIPAlignModule),
            "vision": {"class_path": path(VisionTower), "init_args": _vision_init_args(arch, options)},
            "text": {"class_path": path(TextTower), "init_args": text_args},
            "embed_dim": embed_dim,
            "loss": {"normalize": False, "exp_scale": False},  # the authors' raw-feature similarity (§C.5)
            "_instantiator": "lightning.pytorch.cli.instantiate_module"}


def _mapped_trainables(sd, parts: TextParts, converted: dict, head: dict, report: ImportReport) -> dict:
    state = {"vision.backbone." + k: v for k, v in converted.items()}
    if set(head) != {"weight", "bias"}:
        raise UnmappedKeysError("visual.head.weight / visual.head.bias (the image projection) are missing")
    state["image_proj.weight"], state["image_proj.bias"] = head["weight"], head["bias"]
    for i, name in ((0, "norm"), (1, "proj")):
        for p in ("weight", "bias"):
            key = f"text.projection.{i}.{p}"
            if key not in sd:
                raise UnmappedKeysError(f"{key} (the text projection) is missing")
            state[f"text_adapter.{name}.{p}"] = sd[key]
            report.mark(key, KeyFate.LOADED)
    if "logit_scale" not in sd:
        raise UnmappedKeysError("logit_scale is missing")
    state["logit_scale"] = sd["logit_scale"].reshape(())
    report.mark("logit_scale", KeyFate.LOADED)
    for ours, (key, value) in parts.lora.items():
        state[ours] = value
        report.mark(key, KeyFate.LOADED)
    return state


def _check_frozen(module, parts: TextParts, report: ImportReport, verify: bool) -> None:
    ours = module.state_dict()
    unknown = [key for name, (key, _) in parts.frozen.items() if name not in ours]
    if unknown:
        raise UnmappedKeysError(f"{len(unknown)} text weights have no counterpart in the text encoder "
                                f"(e.g. {unknown[:6]}); is --text-encoder the LLM2VEC4CXR the model was trained on?")
    bad = [key for name, (key, value) in parts.frozen.items() if verify and not same_weights(value, ours[name])]
    if bad:
        raise ValueError(f"{len(bad)} frozen text weights differ from the text encoder's (e.g. {bad[:6]}): "
                         f"--text-encoder is not the encoder this checkpoint was trained on")
    for _, (key, _) in parts.frozen.items():
        report.mark(key, KeyFate.VERIFIED)
    if not verify:
        report.notes.append("frozen text weights were NOT compared with the text encoder (--no-verify-frozen)")
    for key, value in parts.inactive:
        if ".lora_B." in key and bool(value.abs().sum() > 0):
            raise ValueError(f"{key}: adapter is not the active one but has trained weights; choose it with "
                             f"--adapter-name")
        report.mark(key, KeyFate.INACTIVE_ADAPTER)


def import_llm2clip4cxr(checkpoint: str | Path, options: ImportOptions):
    """Build the ``CLIPAlignModule`` for the authors' checkpoint and load it; returns ``(module, hparams,
    report)``. Raises on any key without a mapping, a shape that does not fit or a frozen weight that differs."""
    from lightning.pytorch.cli import instantiate_module
    from lightning.pytorch.core import LightningModule

    sd = load_state_dict_file(checkpoint)
    report = ImportReport(source=str(checkpoint))
    core = _split_text(sd, report)
    adapter = _choose_adapter(core, options.adapter_name)
    parts = sort_text(core, adapter, options.adapter_name)
    hparams = build_hparams(sd, parts, options)
    # the path LightningModule.load_from_checkpoint takes (it drops the '_instantiator' entry first)
    module = instantiate_module(LightningModule, {k: v for k, v in hparams.items() if k != "_instantiator"})
    module.configure_model()  # builds the text encoder (+ LoRA) from --text-encoder
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    converted, head = convert_visual(visual, module.vision.backbone, report)
    state = _mapped_trainables(sd, parts, converted, head, report)
    _check_frozen(module, parts, report, options.verify_frozen)
    report.check_complete(sd)
    module.load_state_dict(state, strict=True)  # every trainable weight must be in ``state`` (CLIPAlignModule)
    if adapter is not None and adapter != options.adapter_name:
        report.notes.append(f"LoRA adapter {adapter!r} loaded as {options.adapter_name!r}")
    return module.eval(), hparams, report


@torch.no_grad()
def smoke_forward(module) -> tuple[torch.Size, torch.Size]:
    """One grey image and one report through the imported model: shapes, and finite values."""
    size, chans = module.vision.image_size, module.vision.in_chans
    image = module.encode_images(torch.full((1, chans, size, size), 0.1))
    text = module.encode_texts(["[IMPRESSION] No acute cardiopulmonary process."])
    if not (torch.isfinite(image).all() and torch.isfinite(text).all()):
        raise ValueError("the imported model produced non-finite embeddings")
    return image.shape, text.shape


#: The authors' eval preprocessing (``eva_clip/transform.py``): RGB, OpenAI-CLIP mean/std, short side + centre crop.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def authors_preprocessing(module):
    """The ``TransformConfig`` of the authors' validation transform at the model's input size."""
    from cxr.data.transforms import EvalResize, TransformConfig

    return TransformConfig(image_size=module.vision.image_size, in_chans=module.vision.in_chans, mean=CLIP_MEAN,
                           std=CLIP_STD, eval_resize=EvalResize.CROP)


def save_imported(module, hparams: dict, out: str | Path) -> Path:
    """A Lightning checkpoint ``eval.py`` (``load_checkpoint_model``) and ``cxr.load`` rebuild: hparams, trainable
    weights and the stored inference record (the authors' preprocessing, so ``cxr.load(...).preprocess`` is it)."""
    import lightning

    from cxr.models.inference_config import FROM_AUTHORS, INFERENCE_KEY, inference_record
    from cxr.models.timm_export import transform_dict

    module.loaded_inference_record = {"preprocess": transform_dict(authors_preprocessing(module)),
                                      "preprocess_source": FROM_AUTHORS}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = module.trainable_state_keys()
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k in keep}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": lightning.__version__, INFERENCE_KEY: inference_record(module)}, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cxr.models.importers.llm2clip4cxr",
                                description="Import the authors' llm2clip4cxr.bin into a CLIPAlignModule checkpoint")
    p.add_argument("--checkpoint", required=True, help="the authors' llm2clip4cxr.bin (or a consolidated .bin/.pt)")
    p.add_argument("--text-encoder", required=True,
                   help="LLM2VEC4CXR folder (python -m cxr.models.importers.llm2vec4cxr output or HF snapshot)")
    p.add_argument("--out", required=True, help="output .ckpt (an import report .json is written next to it)")
    p.add_argument("--adapter-name", default="llm2clip")
    p.add_argument("--lora-alpha", type=int, default=None, help="default 2·r (the authors' r16/alpha32)")
    p.add_argument("--torch-dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's (448)")
    p.add_argument("--no-verify-frozen", action="store_true", help="skip comparing the frozen text weights")
    p.add_argument("--no-smoke", action="store_true", help="skip the one-image/one-report forward check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = ImportOptions(text_encoder=args.text_encoder, adapter_name=args.adapter_name,
                            lora_alpha=args.lora_alpha, torch_dtype=args.torch_dtype, image_size=args.image_size,
                            verify_frozen=not args.no_verify_frozen)
    module, hparams, report = import_llm2clip4cxr(args.checkpoint, options)
    if not args.no_smoke:
        shapes = smoke_forward(module)
        report.notes.append(f"smoke forward: image {tuple(shapes[0])}, text {tuple(shapes[1])}")
    out = save_imported(module, hparams, args.out)
    report_path = report.write(out.with_suffix(".import.json"))
    sys.stdout.write(f"imported {len(report.fates)} keys {report.counts()} -> {out} (report {report_path})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
