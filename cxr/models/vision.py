"""Vision tower: any timm backbone (ViT, EVA02, ConvNeXt, ResNet) as pooled features + a projection head."""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

import torch
from torch import nn

from cxr.models.init_record import init_record


def check_timm_model_name(model_name: str) -> None:
    """Raise ``ValueError`` listing close matches when timm does not know ``model_name``."""
    import timm

    if timm.is_model(model_name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(model_name, names, n=8, cutoff=0.5)
    stem = model_name.split("_")[0]
    close += [n for n in fnmatch.filter(names, f"{stem}*") if n not in close][: max(0, 8 - len(close))]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown timm model {model_name!r}{hint}")


def load_local_weights(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.load(weights_only=True)`` file.

    Unwraps the usual containers (``state_dict``, ``model``, ``module``) and strips a ``visual.``/``module.``
    prefix, so EVA-CLIP and DDP checkpoints load too.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained vision weights not found: {path}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "visual.", "vision."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


class VisionTower(nn.Module):
    """A timm backbone giving pooled features (``num_classes=0``); the projection head lives in the module.

    Args:
        model_name: any ``timm.list_models()`` name; unknown names fail here, before any data loading.
        pretrained: ``False`` (random init), ``True`` (timm hub weights; needs network) or a local weights
            file (``.safetensors`` or a torch file loaded with ``weights_only=True``), filtered through the
            model's own ``checkpoint_filter_fn`` so EVA-CLIP ``visual.*`` checkpoints map onto timm EVA.
        in_chans: 1 (grayscale radiographs) or 3 (RGB-replicated, as the authors).
        image_size: input resolution (paper: 448 for EVA02-L/14).
        drop_path_rate: stochastic depth.
        grad_checkpointing: timm activation checkpointing.
        model_kwargs: extra ``timm.create_model`` arguments that change the architecture (e.g. ``depth``,
            ``embed_dim``, ``num_heads``), for checkpoints whose shapes differ from the named model's.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool | str = False,
        in_chans: int = 3,
        image_size: int = 224,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        model_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        #: how to build this tower again (stored in the CLIP module's hyper-parameters)
        self.init_record = init_record(self, locals())
        check_timm_model_name(model_name)
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        self.model_name = model_name
        self.image_size = image_size
        self.in_chans = in_chans
        self.model_kwargs = dict(model_kwargs or {})
        reserved = {"num_classes", "in_chans", "drop_path_rate", "img_size", "pretrained"} & set(self.model_kwargs)
        if reserved:
            raise ValueError(f"model_kwargs may not set {sorted(reserved)}: they are VisionTower arguments")
        kwargs: dict = {"num_classes": 0, "in_chans": in_chans, "drop_path_rate": drop_path_rate,
                        **self.model_kwargs}
        try:
            self.backbone = self._create(model_name, pretrained is True, image_size, kwargs)
        except OSError as err:  # hub weights without network (HF_HUB_OFFLINE, no connection, not cached)
            if pretrained is not True:
                raise
            raise OSError(f"timm hub weights of {model_name!r} are not available (offline or not cached): "
                          f"{err}. Set pretrained to a local weights file (.safetensors / .pt) instead") from err
        if isinstance(pretrained, str) and pretrained:
            self.load_backbone_weights(pretrained)
        if grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)

    @staticmethod
    def _create(model_name: str, hub: bool, image_size: int, kwargs: dict) -> nn.Module:
        import timm

        try:  # ViT-like models take the resolution (position embeddings); CNNs reject the kwarg at once
            return timm.create_model(model_name, pretrained=hub, img_size=image_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
            return timm.create_model(model_name, pretrained=hub, **kwargs)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def load_backbone_weights(self, path: str) -> None:
        """Load a local checkpoint into the backbone; classifier/projection keys are dropped."""
        import importlib

        sd = load_local_weights(path)
        module = importlib.import_module(type(self.backbone).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            sd = filter_fn(sd, self.backbone)
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc.", "classifier."))}
        missing, unexpected = self.backbone.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith(("head", "fc.", "classifier"))]
        if missing:
            raise ValueError(f"{path}: {len(missing)} backbone weights missing (e.g. {missing[:5]})")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of ``(B, in_chans, S, S)`` images; a 3-channel tower also takes grey ``(B, 1, S, S)``
        batches and replicates the channel here, on the batch's device (``CXRDataModule`` sends grey batches
        when the normalisation is the same for all channels: a third of the worker output and host-to-device
        copy)."""
        if images.shape[1] == 1 and self.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] != self.in_chans:
            raise ValueError(f"vision tower expects {self.in_chans} channels, batch has {images.shape[1]}")
        return self.backbone(images)

