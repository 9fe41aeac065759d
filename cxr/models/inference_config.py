"""What a trained dual-tower model needs at inference, stored in every checkpoint and export: the exact eval
preprocessing (size, channels, mean/std, resize mode) and the text tower's instruction settings.

``CLIPAlignModule.on_save_checkpoint`` writes :func:`inference_record` under ``checkpoint["cxr_inference"]``;
``cxr.load`` reads it back, so nobody has to type the preprocessing again (a wrong guess would fail silently).
"""

from __future__ import annotations

from cxr.data.transforms import TransformConfig

INFERENCE_KEY = "cxr_inference"
FORMAT_VERSION = 1
FROM_DATAMODULE = "datamodule"
FROM_DEFAULTS = "vision_tower_with_transform_defaults"
FROM_AUTHORS = "authors_release"  # an imported release: the authors' published preprocessing


def preprocessing_of(module) -> tuple[TransformConfig, str]:
    """The eval preprocessing the module was trained/evaluated with, and where it came from.

    The attached DataModule's ``transform`` (a ``TransformConfig``: what the model actually saw); else what the
    checkpoint it was loaded from stored; else (a fresh module outside a Trainer, another DataModule) the vision
    tower's size and channels with ``TransformConfig``'s defaults, marked as such so loaders can warn.
    """
    trainer = getattr(module, "_trainer", None)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    transform = getattr(dm, "transform", None)
    if isinstance(transform, TransformConfig):
        return transform, FROM_DATAMODULE
    loaded = getattr(module, "loaded_inference_record", None)  # set by on_load_checkpoint
    if loaded and loaded.get("preprocess"):
        from cxr.models.timm_export import transform_from_dict

        return transform_from_dict(loaded["preprocess"]), loaded.get("preprocess_source", FROM_DATAMODULE)
    vision = module.vision
    return TransformConfig(image_size=vision.image_size, in_chans=vision.in_chans), FROM_DEFAULTS


def text_settings_of(text_tower) -> dict:
    """The text tower's encoding settings (instruction rule, encoder, limits) as JSON-ready values."""
    pooling = getattr(text_tower, "pooling", None)
    return {"encoder": text_tower.model_name_or_path, "instruction": text_tower.instruction,
            "max_length": text_tower.max_length, "pooling": getattr(pooling, "value", pooling),
            "torch_dtype": text_tower.torch_dtype, "embedding_dim": int(text_tower.embedding_dim)}


def inference_record(module) -> dict:
    """``checkpoint["cxr_inference"]``: preprocessing, its source, text settings and the similarity rule."""
    from cxr.models.timm_export import transform_dict

    transform, source = preprocessing_of(module)
    loss = getattr(module, "loss_config", None)
    return {"format_version": FORMAT_VERSION, "preprocess": transform_dict(transform), "preprocess_source": source,
            "text": text_settings_of(module.text), "normalize": bool(getattr(loss, "normalize", True))}
