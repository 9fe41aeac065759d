"""LLM2CLIP4CXR: a timm vision tower aligned CLIP-style to a frozen LLM text encoder through an adapter."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from lightning.pytorch import Callback, LightningModule
from torch import nn

from cxr.callbacks.settings_check import ImageSettingsCheck
from cxr.callbacks.text_cache import TextCacheFiller
from cxr.data.batch import ImageTextBatch
from cxr.distributed import clean_param_name
from cxr.losses.clip import (
    SIGLIP_INIT_LOGIT_BIAS,
    ClipLossConfig,
    ClipLossKind,
    clamp_logit_scale_,
    clip_loss,
)
from cxr.metrics.retrieval import ImageTextRetrieval
from cxr.models.grad_cache import check_micro_batches, check_strategy, grad_cache_step, split_evenly
from cxr.models.init_record import build_from_record
from cxr.models.optim import ScheduleKind, adamw_with_schedule, clip_param_groups
from cxr.models.sync_bn import count_batchnorm, sync_batchnorm
from cxr.models.text.tower import TextTower
from cxr.models.vision import VisionTower


@dataclass
class EmbeddingBatch:
    """What ``predict_step`` returns: joint-space embeddings, the batch's identifiers and its report texts.

    The texts are there for the caller (``EmbeddingWriter(include_text=True)``); nothing logs them and the
    writer leaves them out by default.
    """

    image_emb: torch.Tensor
    text_emb: torch.Tensor
    study_keys: list[str]
    study_ids: torch.Tensor
    sample_index: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    texts: list[str]


class CLIPAlignModule(LightningModule):
    """Dual-tower image–text alignment (LLM2CLIP4CXR, paper §C).

    Args:
        vision: timm vision tower (trainable).
        text: text tower (frozen encoder, optional LoRA, optional embedding cache).
        embed_dim: joint embedding size (paper: 1280).
        loss: contrastive-loss settings (InfoNCE/SigLIP, normalisation, study-aware masking).
        lr: base learning rate (paper: 1e-5).
        text_lr_scale: lr multiplier of the text adapter and LoRA (a fresh adapter may want more).
        weight_decay: AdamW decay on ≥2-D weights (paper: 0.05); norms, biases and the scale get none.
        betas, eps: AdamW (paper: (0.9, 0.98), 1e-6).
        warmup_steps: linear warm-up steps before the cosine schedule.
        min_lr_ratio: cosine floor as a fraction of the base lr.
        layer_decay: layer-wise lr decay on the vision backbone (paper: 0.85; 1 disables).
        head_init_std: the image projection starts at trunc-normal(0.02·this) (EVA-CLIP: 0.001).
        eval_ks: the K of validation/test Recall@K.
        retrieval_protocol: ``study``, ``image`` or ``paper`` (see ``cxr.metrics.retrieval``); ``image`` and
            ``paper`` score every image when the DataModule's ``eval_unit`` is ``image``.
        fill_text_cache: embed the DataModule's texts into the cache at ``setup``
            (:class:`~cxr.callbacks.text_cache.TextCacheFiller`).
        micro_batches: feature accumulation (GradCache, :mod:`cxr.models.grad_cache`): each training batch is
            embedded in this many micro-batches and the loss is the full batch's, with the exact full-batch
            gradient and the activation memory of one micro-batch. 1 = off. A contrastive batch of 1,024 on
            2 GPUs: ``batch_size: 512`` with ``micro_batches: 4``.
        sync_batchnorm: under data parallelism (world size > 1), BatchNorm layers of the vision tower use the
            statistics of the global batch (``cxr.models.sync_bn``), so a DDP fit equals one process with the same
            global batch; without it each rank normalises with its local batch. No effect on one process or on
            BatchNorm-free towers (ViTs).
    """

    def __init__(
        self,
        vision: VisionTower,
        text: TextTower,
        embed_dim: int = 512,
        loss: ClipLossConfig | None = None,
        lr: float = 1e-5,
        text_lr_scale: float = 1.0,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        layer_decay: float = 0.85,
        head_init_std: float = 1.0,
        eval_ks: list[int] | None = None,
        retrieval_protocol: str = "study",
        fill_text_cache: bool = True,
        micro_batches: int = 1,
        sync_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        # The towers are modules (their weights live in the state dict); what rebuilds them is their
        # constructor record, stored instead, so load_from_checkpoint works for CLI- and Python-built modules.
        vision = build_from_record(vision, VisionTower) if isinstance(vision, dict) else vision
        text = build_from_record(text, TextTower) if isinstance(text, dict) else text
        self.save_hyperparameters(ignore=["vision", "text"])
        self.hparams.update(vision=vision.init_record, text=text.init_record)
        self.vision = vision
        self.text = text
        self.loss_config = loss or ClipLossConfig()
        self.micro_batches = check_micro_batches(micro_batches)
        self.sync_batchnorm = sync_batchnorm
        self.image_proj = nn.Linear(vision.num_features, embed_dim)
        nn.init.trunc_normal_(self.image_proj.weight, std=0.02 * head_init_std)
        nn.init.zeros_(self.image_proj.bias)
        self.text_adapter = text.make_adapter(embed_dim)
        # One-element vectors, not 0-d scalars: FSDP cannot shard 0-d parameters (checkpoints of 0-d tensors
        # still load: ``load_state_dict`` reshapes them).
        self.logit_scale = nn.Parameter(torch.tensor([self.loss_config.initial_scale()]),
                                        requires_grad=self.loss_config.learn_logit_scale)
        siglip = self.loss_config.kind == ClipLossKind.SIGLIP
        self.logit_bias = nn.Parameter(torch.tensor([SIGLIP_INIT_LOGIT_BIAS])) if siglip else None
        ks = tuple(eval_ks or (1, 5, 10))
        self.val_retrieval = ImageTextRetrieval(ks=ks, protocol=retrieval_protocol,
                                                normalize=self.loss_config.normalize)
        self.test_retrieval = ImageTextRetrieval(ks=ks, protocol=retrieval_protocol,
                                                 normalize=self.loss_config.normalize)
        # Checkpoints hold only trainable weights; the frozen encoder comes from its own files. Loading stays
        # strict for everything else (see ``load_state_dict``).

    # -------------------------------------------------------------------------------------- building
    def setup(self, stage: str) -> None:
        self._sync_batchnorm_across_ranks()

    def configure_callbacks(self) -> list[Callback]:
        # Jobs that need both this module and the DataModule live in callbacks, which see both.
        callbacks: list[Callback] = [ImageSettingsCheck()]
        if self.hparams.fill_text_cache:
            callbacks.append(TextCacheFiller())
        return callbacks

    def _sync_batchnorm_across_ranks(self) -> None:
        # before the strategy wraps the model and the optimiser is built, so both see the converted layers
        if not self.sync_batchnorm or self._trainer is None or self.trainer.world_size < 2:
            return
        if count_batchnorm(self.vision):
            self.vision = sync_batchnorm(self.vision, self.trainer.strategy.root_device)

    def configure_model(self) -> None:
        # The LLM is only needed online: with LoRA, or without the cache. Idempotent.
        if not self.text.uses_cache:
            self.text.build_encoder()

    # --------------------------------------------------------------------------------------- forward
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.vision(images))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        feats = self.text(texts).to(self.device)
        return self.text_adapter(feats)

    def forward(self, batch: ImageTextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_images(batch.images), self.encode_texts(batch.texts)

    def _loss(self, batch: ImageTextBatch):
        image_emb, text_emb = self(batch)
        return clip_loss(image_emb, text_emb, self.logit_scale, batch.study_ids, batch.text_ids,
                         self.loss_config, self.logit_bias)

    def _accumulated_loss(self, batch: ImageTextBatch):
        """The full-batch loss and gradient from ``micro_batches`` micro-batches (see ``cxr.models.grad_cache``)."""
        chunks = [(batch.images[sl], batch.texts[sl]) for sl in split_evenly(len(batch), self.micro_batches)]

        def loss_fn(features):
            out = clip_loss(features[0], features[1], self.logit_scale, batch.study_ids, batch.text_ids,
                            self.loss_config, self.logit_bias)
            return out.loss, out

        if self._trainer is not None:
            check_strategy(self.trainer)
        result = grad_cache_step(chunks, lambda c: (self.encode_images(c[0]), self.encode_texts(c[1])), loss_fn,
                                 self, [self.logit_scale] + ([self.logit_bias] if self.logit_bias is not None
                                                             else []))
        return replace(result.extra, loss=result.surrogate)

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> torch.Tensor:
        out = self._accumulated_loss(batch) if self.micro_batches > 1 else self._loss(batch)
        b = len(batch)
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=b, sync_dist=False)
        scale = self.logit_scale.detach().squeeze()
        self.log("train/logit_scale", scale.exp() if self.loss_config.exp_scale else scale, batch_size=b)
        self.log("train/i2t_acc", out.i2t_acc, batch_size=b)
        self.log("train/t2i_acc", out.t2i_acc, batch_size=b)
        self._log_skipped(batch, "train")
        return out.loss

    def _log_skipped(self, batch: ImageTextBatch, prefix: str) -> None:
        """Images that failed to load under ``bad_input: SKIP`` (replaced by the next sample), summed per epoch."""
        n = float(len(getattr(batch, "skipped_images", ()) or ()))
        self.log(f"{prefix}/skipped_images", n, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True,
                 batch_size=len(batch))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        clamp_logit_scale_(self.logit_scale, self.loss_config.max_logit_scale)

    def _eval_step(self, batch: ImageTextBatch, metric, prefix: str) -> None:
        image_emb, text_emb = self(batch)
        out = clip_loss(image_emb, text_emb, self.logit_scale, batch.study_ids, batch.text_ids,
                        self.loss_config, self.logit_bias)
        self.log(f"{prefix}/loss", out.loss, batch_size=len(batch), sync_dist=True)
        self._log_skipped(batch, prefix)
        metric.update(image_emb, text_emb, batch.study_ids, batch.text_ids, batch.sample_index, batch.labels)

    def _log_retrieval(self, metric, prefix: str) -> None:
        values = metric.compute()
        metric.reset()
        keep = {f"{prefix}/{k}": v.float() for k, v in values.items() if "num_" not in k}
        self.log_dict(keep, sync_dist=False)  # already synced by the metric

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_retrieval, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval(self.val_retrieval, "val")

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_retrieval, "test")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval(self.test_retrieval, "test")

    def predict_step(self, batch: ImageTextBatch, batch_idx: int, dataloader_idx: int = 0) -> EmbeddingBatch:
        image_emb, text_emb = self(batch)
        return EmbeddingBatch(image_emb=image_emb.float().cpu(), text_emb=text_emb.float().cpu(),
                              study_keys=list(batch.study_keys), study_ids=batch.study_ids.cpu(),
                              sample_index=batch.sample_index.cpu(), labels=batch.labels.cpu(),
                              sources=list(batch.sources), texts=list(batch.texts))

    # ------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        hp = self.hparams
        heads: dict[str, nn.Module] = {"image_proj": self.image_proj, "text_adapter": self.text_adapter}
        if self.text.trainable and self.text.encoder is not None:
            heads["text_lora"] = self.text.encoder
        scalars = [self.logit_scale] + ([self.logit_bias] if self.logit_bias is not None else [])
        groups = clip_param_groups(self.vision.backbone, heads, scalars, hp.weight_decay, hp.layer_decay,
                                   text_lr_scale=hp.text_lr_scale, text_heads=("text_adapter", "text_lora"))
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return adamw_with_schedule([g.as_dict(hp.lr) for g in groups], lr=hp.lr, weight_decay=hp.weight_decay,
                                   warmup_steps=hp.warmup_steps, total_steps=total, kind=ScheduleKind.COSINE,
                                   min_ratio=hp.min_lr_ratio, betas=tuple(hp.betas), eps=hp.eps)

    # ----------------------------------------------------------------------------------- checkpoints
    def trainable_state_keys(self) -> set[str]:
        """State-dict keys a checkpoint keeps: trainable params plus buffers outside the frozen encoder."""
        # Names as a checkpoint spells them: FSDP inserts wrapper prefixes into the live module's names.
        keep = {clean_param_name(n) for n, p in self.named_parameters() if p.requires_grad}
        buffers = (clean_param_name(n) for n, _ in self.named_buffers())
        return keep | {n for n in buffers if not n.startswith("text.encoder.")}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from cxr.models.inference_config import INFERENCE_KEY, inference_record

        keep = self.trainable_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        # the eval preprocessing and text settings, so cxr.load() never has to guess them
        checkpoint[INFERENCE_KEY] = inference_record(self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from cxr.models.inference_config import INFERENCE_KEY

        # kept so an export of a reloaded module (no DataModule attached) carries the training's preprocessing
        self.loaded_inference_record = checkpoint.get(INFERENCE_KEY)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a checkpoint that holds only :meth:`trainable_state_keys`; strict about everything else.

        Frozen weights (the text encoder without LoRA, a fixed logit scale) may be absent: they come from the
        encoder's own files and the config. A missing trainable weight (vision, projections, adapter, LoRA,
        learnt scale) or an unknown key (e.g. LoRA weights loaded into a tower built without LoRA) is an error
        with ``strict``; a plain ``strict=False`` would silently keep a random init or drop the LoRA weights.
        """
        from torch.nn.modules.module import _IncompatibleKeys

        state_dict = dict(state_dict)
        for name in ("logit_scale", "logit_bias"):  # 0-d in checkpoints written before they became (1,)
            own = getattr(self, name, None)
            if name in state_dict and own is not None and state_dict[name].shape != own.shape:
                state_dict[name] = state_dict[name].reshape(own.shape)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        keep = self.trainable_state_keys()
        missing = [k for k in result.missing_keys if k in keep]
        unexpected = list(result.unexpected_keys)
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"{len(missing)} trainable weights missing (e.g. {missing[:5]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[:5]}; was the "
                             f"checkpoint trained with another text/vision tower, LoRA or loss kind?)")
            name = type(self).__name__
            raise RuntimeError(f"{name} checkpoint does not fit the model: " + "; ".join(parts))
        return _IncompatibleKeys(missing, unexpected)
