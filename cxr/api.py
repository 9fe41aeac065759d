"""One-call Python API: ``cxr.load(path)`` → a model that embeds images and reports.

``path`` may be a ``train.py`` checkpoint (``.ckpt``), a CLIP export folder (``clip_export.json``), a vision
export (``cxr_vision.json``, image side only) or a text-encoder export (``cxr_text_encoder.json``, text side
only). The image preprocessing is the exact eval pipeline stored at training time (``model.preprocess``)::

    import cxr
    model = cxr.load("outputs/demo/run/checkpoints/best.ckpt")
    img = model.encode_image(["a.png", "b.dcm"])           # paths, or a (B, C, S, S) tensor already preprocessed
    txt = model.encode_text(["No acute cardiopulmonary process.", "Large right pneumothorax."])
    scores = model.similarity(img, txt)                     # (2, 2) cosine similarities
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxr.data.transforms import TransformConfig

log = logging.getLogger(__name__)

ImageInput = torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike] | np.ndarray


class Preprocess:
    """The eval image preprocessing as a callable: a file path (DICOM/PNG/JPEG/TIFF) or a float ``(H, W)`` array
    in ``[0, 1]`` → tensor ``(C, S, S)``. ``config`` is the stored ``TransformConfig``."""

    def __init__(self, config: TransformConfig) -> None:
        self.config = config
        self._transform = config.build(train=False)

    def __call__(self, image: str | os.PathLike | np.ndarray) -> torch.Tensor:
        from cxr.data.images import load_image

        pixels = load_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
        return self._transform(pixels)

    def __repr__(self) -> str:
        return f"Preprocess({self.config})"


class CXRModel(nn.Module):
    """Image and text encoders of a trained model in one object (what :func:`load` returns).

    Args:
        image_encoder: preprocessed images ``(B, C, S, S)`` → joint-space embeddings (None: text-only model).
        text_encoder: list of report texts → embeddings (None: image-only model).
        preprocess: the stored eval preprocessing (None for a text-only model).
        modules: the ``nn.Module``s behind the two callables (moved by :meth:`to`).
        normalize: whether :meth:`similarity` uses cosine (the training's similarity) or raw dot products.
    """

    def __init__(self, image_encoder: Callable[[torch.Tensor], torch.Tensor] | None,
                 text_encoder: Callable[[list[str]], torch.Tensor] | None, preprocess: Preprocess | None,
                 modules: dict[str, nn.Module], normalize: bool = True, info: dict | None = None) -> None:
        super().__init__()
        self._image_encoder, self._text_encoder = image_encoder, text_encoder
        self.preprocess = preprocess
        self.parts = nn.ModuleDict(modules)
        self.normalize = normalize
        self.info = info or {}
        self.eval()

    def to(self, *args, **kwargs) -> CXRModel:
        # each part's own .to(): a LightningModule only updates its ``device`` property there
        for part in self.parts.values():
            part.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def _images_tensor(self, images: ImageInput) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return images if images.ndim == 4 else images.unsqueeze(0)
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        if self.preprocess is None:
            raise ValueError("this model has no image preprocessing (a text-only export)")
        return torch.stack([self.preprocess(x) for x in images])

    @torch.no_grad()
    def encode_image(self, images: ImageInput, batch_size: int = 32, normalize: bool = False) -> torch.Tensor:
        """Embeddings ``(N, D)`` (float32, CPU) of image paths/arrays (preprocessed here) or a preprocessed
        ``(N, C, S, S)`` tensor; ``normalize`` L2-normalises them."""
        if self._image_encoder is None:
            raise ValueError("this model has no image encoder (a text-encoder export); load a checkpoint or a CLIP "
                             "export for images")
        batch = self._images_tensor(images)
        out = [self._image_encoder(batch[i:i + batch_size].to(self.device)).float().cpu()
               for i in range(0, len(batch), batch_size)]
        emb = torch.cat(out)
        return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 32, normalize: bool = False) -> torch.Tensor:
        """Embeddings ``(N, D)`` (float32, CPU) of report texts, with the stored instruction settings."""
        if self._text_encoder is None:
            raise ValueError("this model has no text encoder (a vision export)")
        if isinstance(texts, str):
            texts = [texts]
        out = [self._text_encoder(list(texts[i:i + batch_size])).float().cpu()
               for i in range(0, len(texts), batch_size)]
        emb = torch.cat(out)
        return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``(N_images, N_texts)`` scores: cosine similarity (dot product if the model was trained without
        normalisation, as the authors' similarity), the ranking the retrieval metrics use."""
        if self.normalize:
            image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
            text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1)
        return image_emb.float() @ text_emb.float().T


def load(path: str | os.PathLike, device: str | torch.device | None = None,
         transform: TransformConfig | None = None) -> CXRModel:
    """Load a checkpoint or an export folder (see the module docstring) for inference.

    ``device``: where to run (default: CUDA when available, else CPU). ``transform`` overrides the stored
    preprocessing (needed only for checkpoints written before it was stored).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"cxr.load: {p} does not exist")
    if p.is_file():
        model = _from_checkpoint(p, transform)
    elif (p / "clip_export.json").is_file():
        model = _from_clip_export(p, transform)
    elif (p / "cxr_vision.json").is_file():
        model = _from_vision_export(p, transform)
    elif (p / "cxr_text_encoder.json").is_file() or (p / "config.json").is_file():
        model = _from_text_export(p)
    else:
        raise ValueError(f"cxr.load: {p} is neither a checkpoint file nor an export folder (clip_export.json, "
                         f"cxr_vision.json or cxr_text_encoder.json)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def _stored_transform(record: dict | None, override: TransformConfig | None, where: Path) -> TransformConfig:
    from cxr.models.inference_config import FROM_DATAMODULE, FROM_DEFAULTS
    from cxr.models.timm_export import transform_from_dict

    if override is not None:
        return override
    if not record or "preprocess" not in record:
        raise ValueError(f"{where}: no stored preprocessing (saved before cxr stored it); pass "
                         f"cxr.load(..., transform=TransformConfig(image_size=..., in_chans=..., mean=..., std=...)) "
                         f"with the values of the training config")
    if record.get("preprocess_source", FROM_DATAMODULE) == FROM_DEFAULTS:
        log.warning("%s: the stored preprocessing is the vision tower's size with TransformConfig defaults (the "
                    "model was saved without a CXRDataModule); pass transform= if training used other values",
                    where)
    return transform_from_dict(record["preprocess"])


def _from_checkpoint(path: Path, transform: TransformConfig | None) -> CXRModel:
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model
    from cxr.models.inference_config import INFERENCE_KEY

    record = torch.load(path, map_location="cpu", weights_only=True).get(INFERENCE_KEY)
    module = prepare_model(load_checkpoint_model(path))
    text = module.text
    text.build_encoder()  # a submodule now, so CXRModel.to(device) moves the encoder too

    def encode_texts(texts: list[str]) -> torch.Tensor:
        # online, not through the training cache: the user's texts are new, and nothing is written to disk
        feats = text.encode_online(texts).to(module.text_adapter.proj.weight.device)
        return module.text_adapter(feats)

    preprocess = Preprocess(_stored_transform(record, transform, path))
    return CXRModel(module.encode_images, encode_texts, preprocess, {"module": module},
                    normalize=bool(module.loss_config.normalize), info={"source": str(path), **(record or {})})


def _from_clip_export(folder: Path, transform: TransformConfig | None) -> CXRModel:
    """A CLIP export folder: both towers and the stored preprocessing."""
    from cxr.models.clip_export import load_exported_clip
    from cxr.models.clip_export_io import CONFIG
    from cxr.models.text.tower import TextTower

    folder = Path(folder)
    cfg = json.loads((folder / CONFIG).read_text())
    exported = load_exported_clip(folder)
    text_cfg = cfg["text"]
    encoder = str(folder / text_cfg["exported_dir"]) if text_cfg.get("exported_dir") else text_cfg["encoder"]
    tower = TextTower(encoder, use_cache=False, instruction=text_cfg.get("instruction"),
                      torch_dtype=text_cfg.get("torch_dtype"), embedding_dim=text_cfg["embedding_dim"])
    tower.build_encoder()
    adapter = exported.text_adapter

    def encode_texts(texts: list[str]) -> torch.Tensor:
        return adapter(tower.encode_online(texts).to(adapter.proj.weight.device))

    preprocess = Preprocess(_stored_transform(cfg.get("inference"), transform, folder))
    modules = {"vision": exported.vision, "image_proj": exported.image_proj, "text": tower, "adapter": adapter}
    return CXRModel(exported.encode_images, encode_texts, preprocess, modules,
                    normalize=bool(cfg.get("loss", {}).get("normalize", True)), info={"source": str(folder), **cfg})


def _from_vision_export(folder: Path, transform: TransformConfig | None) -> CXRModel:
    from cxr.models.timm_export import load_timm_vision

    backbone, proj, stored = load_timm_vision(folder)
    head = proj if proj is not None else nn.Identity()

    def encode_images(images: torch.Tensor) -> torch.Tensor:
        return head(backbone(images))

    return CXRModel(encode_images, None, Preprocess(transform or stored), {"backbone": backbone, "proj": head},
                    info={"source": str(folder)})


def _from_text_export(folder: Path) -> CXRModel:
    from cxr.models.text.encoder import TextEncoder

    encoder = TextEncoder.from_pretrained(str(folder)).eval()
    meta = json.loads((folder / "cxr_text_encoder.json").read_text()) if (folder / "cxr_text_encoder.json").is_file() \
        else {}

    def encode_texts(texts: list[str]) -> torch.Tensor:
        return encoder(encoder.tokenize(texts).to(next(encoder.parameters()).device))

    return CXRModel(None, encode_texts, None, {"encoder": encoder}, info={"source": str(folder), **meta})
