"""The installed environment: the stack imports (torchvision included), no CUDA wheels on a CPU-only machine."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys

import pytest
import torch


def test_stack_imports_in_a_fresh_interpreter():
    # torchvision is imported by lightning, torchmetrics, timm and peft; a CUDA-only wheel on the CPU torch
    # crashes all of them unless scripts/setup_venv.sh installed its shim.
    code = "import torchvision, timm, lightning, torchmetrics, peft, transformers, albumentations, pydicom, cxr"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchvision_nms_op_matches_a_reference():
    """The ``torchvision::nms`` op (the real kernel, or the CPU shim's where the wheel's ops cannot load)."""
    import torchvision

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], dim=1)
    scores = torch.rand(60, generator=g)
    keep = torch.ops.torchvision.nms(boxes, scores, 0.3)
    iou = torchvision.ops.box_iou(boxes, boxes)
    expected, suppressed = [], torch.zeros(60, dtype=torch.bool)
    for i in scores.argsort(descending=True).tolist():
        if not suppressed[i]:
            expected.append(i)
            suppressed |= iou[i] > 0.3
    assert keep.tolist() == expected


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine may hold CUDA wheels")
def test_no_cuda_wheels_on_a_cpu_only_machine():
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    cuda = sorted(n for n in names if n.startswith(("nvidia-", "cuda-")) or n == "triton")
    assert not cuda, f"CUDA packages installed on a CPU-only machine: {cuda}"
    assert not torch.cuda.is_available()
