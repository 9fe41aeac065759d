"""Make a CUDA-only torchvision wheel importable on a CPU-only torch.

The PyPI torchvision 0.28.0 wheel is built against CUDA; on the CPU torch its ``_C`` extension fails to
load, and ``torchvision/_meta_registrations.py`` then crashes on ``register_fake("torchvision::nms")``.
Lightning, torchmetrics, peft and timm import torchvision, so all of them would crash.  Defining the two
op schemas (plus a small CPU ``nms`` kernel) before torchvision is imported fixes the import.  When the
real ops load (e.g. a GPU machine with CUDA torch), this module does nothing.
"""

import torch

_lib = None


def _nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = scores.argsort(descending=True)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def install() -> None:
    global _lib
    if _lib is not None:
        return
    try:
        torch.ops.torchvision.nms  # real ops already registered
        return
    except (AttributeError, RuntimeError):
        pass
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.impl("nms", _nms_cpu, "CPU")


install()
