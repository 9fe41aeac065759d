"""benchmarks/bench_gpu.py dry-runs every section at toy sizes on CPU (the GPU figures come from a GPU run)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_gpu", None)


@pytest.mark.slow
def test_bench_gpu_dry_run_writes_every_section_without_errors(bench, tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--dry-run", "--out", str(out), "--budget-s", "900"]) == 0
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert set(sections) == {"vision", "text_lora", "clip_step", "cache_fill", "retrieval", "loader"}
    assert not [k for k, v in sections.items() if "error" in v or "skipped" in v]
    assert result["dry_run"] is True and result["environment"]["device"] == "cpu"
    assert sections["vision"]["train_flops_per_image"] > 0
    assert all(r["images_per_s"] > 0 for r in sections["vision"]["rows"])
    assert sections["text_lora"]["trainable_params"] < sections["text_lora"]["params"]  # LoRA only
    assert any("scaled_dot_product" in k for k in sections["text_lora"]["sdpa_kernels"])
    assert 0 < sections["clip_step"]["text_share_of_online_step"] < 1
    assert sections["cache_fill"]["texts"] == result["shape"]["fill_texts"]
    assert sections["retrieval"]["ratio_vs_one_mm"] > 0
    assert sections["loader"]["images"] == result["shape"]["loader_images"]


def test_peak_flops_table_knows_the_lent_gpus(bench):
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("NVIDIA H200") == 989e12
    assert bench.peak_flops("Some Future GPU") is None
