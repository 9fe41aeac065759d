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


def _lock_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "lock.py"
    spec = importlib.util.spec_from_file_location("cxr_lock_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installed_versions_equal_the_lock():
    """The venv holds exactly requirements.lock (what the README's numbers were measured with)."""
    lock = _lock_module()
    problems = lock.check_lock(lock.ROOT / "requirements.lock")
    assert not problems, "\n".join(problems) + "\nreinstall (make setup) or, after a dependency change, make lock"


def test_lock_check_reports_a_drifted_and_an_unlocked_package(tmp_path):
    lock = _lock_module()
    text = (lock.ROOT / "requirements.lock").read_text()
    numpy_line = next(line for line in text.splitlines() if line.lower().startswith("numpy=="))
    drifted = tmp_path / "drifted.lock"
    drifted.write_text(text.replace(numpy_line, "numpy==1.0.0"))
    assert lock.check_lock(drifted) == [f"numpy: installed {importlib.metadata.version('numpy')}, lock 1.0.0"]
    missing = tmp_path / "missing.lock"
    missing.write_text(text.replace(numpy_line + "\n", ""))
    assert [p.split(" is installed")[0] for p in lock.check_lock(missing)] == [
        f"numpy=={importlib.metadata.version('numpy')}"]


def test_every_pip_call_of_the_setup_uses_the_lock():
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "scripts" / "setup_venv.sh").read_text()
    assert 'export PIP_CONSTRAINT="constraints.txt requirements.lock"' in script
    # exported before the first pip call (the venv's own pip upgrade included)
    assert script.index("export PIP_CONSTRAINT") < script.index("pip install")
    assert "scripts/lock.py check" in script
