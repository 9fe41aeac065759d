"""2-process CPU fits of both modules from the CLI with ``--trainer configs/trainer/ddp.yaml`` (gloo), and the
multi-node torchrun recipe of docs/distributed.md run as two one-process "nodes" on this machine (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

CPU_OVERRIDES = ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]


@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model) -> Path:
    return tiny_text_model("llama", hidden_size=32, layers=2, heads=2, kv_heads=1)


@pytest.fixture(scope="module")
def manifest(synthetic_dataset) -> Path:
    return synthetic_dataset("csv", num_studies=40, image_size=64) / "manifest.csv"


def _trained(dump: Path, tag: str) -> dict[str, torch.Tensor]:
    start = torch.load(dump / f"{tag}_start.pt", weights_only=True)
    end = torch.load(dump / f"{tag}_end.pt", weights_only=True)
    assert any(not torch.equal(start[k], end[k]) for k in start), "no trainable weight changed"
    return end


@pytest.mark.timeout(900)
def test_clip_ddp_fit_from_cli_with_text_cache(tmp_path, tiny_llama, manifest) -> None:
    from _dist_helpers import ROOT, clip_config, run_train

    cache = tmp_path / "text_cache"
    config = clip_config(tmp_path, tiny_llama, manifest, max_steps=3, tag="ddp",
                         text={"use_cache": True, "cache_dir": str(cache), "lora": None})
    out = run_train(["fit", "--config", str(config), "--trainer", str(ROOT / "configs/trainer/ddp.yaml"),
                     *CPU_OVERRIDES, "--trainer.devices", "2"], cwd=tmp_path)
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in out
    assert list(cache.glob("*/manifest.json")), "the 2 ranks filled the text cache"
    _trained(tmp_path / "dump", "ddp")


@pytest.mark.timeout(900)
def test_llm2vec_ddp_fit_from_cli(tmp_path, tiny_llama, manifest) -> None:
    from _dist_helpers import ROOT, llm2vec_config, run_train

    config = llm2vec_config(tmp_path, tiny_llama, manifest, max_steps=3, tag="ddp")
    out = run_train(["fit", "--config", str(config), "--trainer", str(ROOT / "configs/trainer/ddp.yaml"),
                     *CPU_OVERRIDES, "--trainer.devices", "2"], cwd=tmp_path)
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in out
    assert any("lora_" in k for k in _trained(tmp_path / "dump", "ddp"))


@pytest.mark.timeout(900)
def test_two_node_torchrun_recipe(tmp_path, tiny_llama, manifest) -> None:
    """docs/distributed.md's torchrun command, with 2 nodes of 1 CPU process each (c10d rendezvous)."""
    from _dist_helpers import ROOT, child_env, clip_config, free_port

    sbatch = (ROOT / "scripts/slurm/train_torchrun.sbatch").read_text()
    plugin = "lightning.fabric.plugins.environments.TorchElasticEnvironment"
    assert plugin in sbatch and "--rdzv-backend c10d" in sbatch  # the script runs the recipe tested here
    config = clip_config(tmp_path, tiny_llama, manifest, max_steps=2, tag="nodes")
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "cxr-test",
           str(ROOT / "train.py"), "fit", "--config", str(config), "--trainer", str(ROOT / "configs/trainer/ddp.yaml"),
           *CPU_OVERRIDES, "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.plugins", plugin]
    nodes = [subprocess.Popen(cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = []
    try:
        for node in nodes:
            outs.append(node.communicate(timeout=800)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, out in zip(nodes, outs, strict=True):
        assert node.returncode == 0, out[-5000:]
    joined = "\n".join(outs)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in joined and "GLOBAL_RANK: 1, MEMBER: 2/2" in joined
    _trained(tmp_path / "dump", "nodes")
