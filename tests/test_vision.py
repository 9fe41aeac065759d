"""Vision tower: local weights, channels/resolution, layer-decay parameter groups."""

from __future__ import annotations

import pytest
import torch

from cxr.models.optim import clip_param_groups
from cxr.models.vision import VisionTower


def test_local_safetensors_and_torch_weights_load(tmp_path) -> None:
    from safetensors.torch import save_file

    src = VisionTower("vit_tiny_patch16_224", in_chans=1, image_size=32)
    sd = {f"visual.{k}": v.contiguous() for k, v in src.backbone.state_dict().items()}  # EVA-CLIP-style prefix
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": src.backbone.state_dict()}, tmp_path / "w.pt")
    x = torch.randn(2, 1, 32, 32)
    src.eval()
    for f in ("w.safetensors", "w.pt"):
        dst = VisionTower("vit_tiny_patch16_224", pretrained=str(tmp_path / f), in_chans=1, image_size=32).eval()
        assert torch.allclose(dst(x), src(x), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not found"):
        VisionTower("vit_tiny_patch16_224", pretrained=str(tmp_path / "missing.safetensors"))


def test_channels_and_resolution() -> None:
    cnn = VisionTower("resnet18", in_chans=3, image_size=48)
    assert cnn(torch.randn(1, 3, 48, 48)).shape == (1, cnn.num_features)
    grey = torch.randn(2, 1, 48, 48)
    cnn.eval()  # grey batches are replicated on the device: same features as the 3-channel copy
    torch.testing.assert_close(cnn(grey), cnn(grey.repeat(1, 3, 1, 1)), atol=0, rtol=0)
    with pytest.raises(ValueError, match="expects 3 channels"):
        cnn(torch.randn(1, 2, 48, 48))
    with pytest.raises(ValueError, match="in_chans"):
        VisionTower("resnet18", in_chans=2)


def test_layer_decay_groups_and_no_decay_on_norms_biases_scale() -> None:
    vit = VisionTower("vit_tiny_patch16_224", in_chans=1, image_size=32)
    head = torch.nn.Linear(vit.num_features, 8)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    groups = clip_param_groups(vit.backbone, {"image_proj": head}, [scale], weight_decay=0.05, layer_decay=0.85)
    scales = sorted({g.lr_scale for g in groups if g.name.startswith("vision")})
    assert len(scales) > 3 and scales[0] < 0.2 and scales[-1] == pytest.approx(1.0)
    for g in groups:
        if g.weight_decay > 0:
            assert all(p.ndim >= 2 for p in g.params), g.name
    assert [g for g in groups if g.name == "logit_scale"][0].weight_decay == 0.0
    n = sum(p.numel() for g in groups for p in g.params)
    assert n == sum(p.numel() for p in vit.parameters()) + sum(p.numel() for p in head.parameters()) + 1


def test_hub_weights_offline_fail_clearly(tmp_path, monkeypatch) -> None:
    """``pretrained: true`` needs the timm hub; offline and uncached, the error names the model and the fix."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(OSError, match=r"'resnet18' are not available .*local weights file"):
        VisionTower("resnet18", pretrained=True, in_chans=1, image_size=32)
