"""GPU checks of what the CPU tests of issue 12 cannot cover (docs/distributed.md, "Not tested here").

    python scripts/gpu_check_distributed.py OUT_DIR        # on a CUDA machine; writes OUT_DIR/gpu_check.json

1. FSDP on one GPU (NCCL, ``bf16-mixed``): ``CLIPAlignModule`` with a frozen **bf16** Llama, fp32 LoRA and a ViT,
   activation checkpointing, 3 steps, sharded checkpoint; a second fit resumes from it. Checks that the dtype-uniform
   wrap plan holds on the GPU and that the resumed trainable weights equal the saved ones.
2. Feature accumulation on CUDA under bf16 autocast with LoRA dropout on: ``micro_batches: 4`` against the same four
   chunked forwards with the graph kept (the CUDA RNG state must be replayed exactly), and against one full-batch
   forward (equal up to bf16 rounding; dropout masks differ there).

Without CUDA it prints a message and exits 0.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def _batches(n: int, size: int, image: int):
    from cxr.data.batch import ImageTextBatch
    from cxr.models.text.tiny import RADIOLOGY_SENTENCES

    out = []
    for s in range(n):
        g = torch.Generator().manual_seed(s)
        texts = [f"{RADIOLOGY_SENTENCES[(s * size + i) % 30]} Case {s}-{i}." for i in range(size)]
        out.append(ImageTextBatch(images=torch.randn(size, 1, image, image, generator=g), texts=texts,
                                  study_keys=[f"{s}-{i}" for i in range(size)],
                                  study_ids=torch.arange(size) + s * size, text_ids=torch.arange(size) + s * size,
                                  sample_index=torch.arange(size), labels=torch.zeros(size, 14, dtype=torch.int8),
                                  sources=["gpu"] * size))
    return out


def _module(llama: Path, micro: int = 1, dropout: float = 0.0, dtype: str | None = "bfloat16"):
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    torch.manual_seed(0)
    text = TextTower(str(llama), use_cache=False, max_length=64, instruction=None, torch_dtype=dtype,
                     lora=LoraSettings(r=8, alpha=16, dropout=dropout))
    return CLIPAlignModule(VisionTower("vit_small_patch16_224", in_chans=1, image_size=64), text, embed_dim=64,
                           lr=1e-3, min_lr_ratio=1.0, layer_decay=1.0, micro_batches=micro)


def _trainable(trainer, module) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from cxr.distributed import clean_param_name

    with FSDP.summon_full_params(trainer.strategy.model, writeback=False):
        return {clean_param_name(n): p.detach().float().cpu().clone() for n, p in module.named_parameters()
                if p.requires_grad}


def check_fsdp(llama: Path, tmp: Path) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from cxr.strategies import CXRFSDPStrategy

    seen: dict[str, dict] = {}

    class Dump(Callback):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on_train_start(self, trainer, module) -> None:
            seen[f"{self.tag}_start"] = _trainable(trainer, module)

        def on_train_end(self, trainer, module) -> None:
            seen[f"{self.tag}_end"] = _trainable(trainer, module)

    data = _batches(6, 16, 64)
    result: dict = {}
    for tag, steps, ckpt in (("first", 3, None), ("second", 5, tmp / "ckpt" / "last.ckpt")):
        module = _module(llama)
        trainer = L.Trainer(accelerator="gpu", devices=1, strategy=CXRFSDPStrategy(), precision="bf16-mixed",
                            max_steps=steps, logger=False, enable_progress_bar=False, num_sanity_val_steps=0,
                            limit_val_batches=0, callbacks=[ModelCheckpoint(tmp / "ckpt", save_last=True),
                                                            Dump(tag)])
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None),
                    ckpt_path=str(ckpt) if ckpt else None)
        result[f"{tag}_fit_s"] = round(time.perf_counter() - t0, 1)
        if tag == "first":
            llm = module.text.encoder
            result["frozen_llm_dtypes"] = sorted({str(p.dtype) for p in llm.parameters() if not p.requires_grad})
            result["lora_dtypes"] = sorted({str(p.dtype) for n, p in llm.named_parameters() if "lora_" in n})
            result["sharded_files"] = sorted(p.name for p in (tmp / "ckpt" / "last.ckpt").iterdir())
    end1, start2, end2 = seen["first_end"], seen["second_start"], seen["second_end"]
    result["resumed_equal"] = all(torch.equal(end1[k], start2[k]) for k in end1)
    result["trained_after_resume"] = any(not torch.equal(start2[k], end2[k]) for k in end2)
    result["lora_tensors"] = sum("lora_" in k for k in end1)
    return result


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in module.named_parameters() if p.grad is not None}


def _max_rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) / max(1e-12, float(b[k].abs().max())) for k in b)


def _accumulated_vs_reference(llama: Path, batch, dropout: float, ref_chunks: int) -> dict:
    """``micro_batches: 4`` vs ``ref_chunks`` forwards with the graph kept, same seed, bf16 autocast on CUDA."""
    from cxr.losses.clip import clip_loss
    from cxr.models.grad_cache import split_evenly

    module = _module(llama, micro=4, dropout=dropout)
    module.configure_model()
    module.cuda().train()
    module.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        feats = [(module.encode_images(batch.images[sl]), module.encode_texts(batch.texts[sl]))
                 for sl in split_evenly(len(batch), ref_chunks)]
        out = clip_loss(torch.cat([f[0] for f in feats]), torch.cat([f[1] for f in feats]), module.logit_scale,
                        batch.study_ids, batch.text_ids, module.loss_config)
    out.loss.backward()
    ref = _grads(module)
    module.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module.training_step(batch, 0)
    loss.backward()
    got = _grads(module)
    return {"loss_accumulated": float(loss), "loss_reference": float(out.loss), "max_rel_grad": _max_rel(got, ref),
            "n_grads": len(got)}


def check_grad_cache(llama: Path) -> dict:
    batch = _batches(1, 32, 64)[0]
    batch = type(batch)(**{k: (v.cuda() if torch.is_tensor(v) else v) for k, v in vars(batch).items()})
    return {"dropout_0.1_vs_same_4_chunks_with_graph": _accumulated_vs_reference(llama, batch, 0.1, 4),
            "dropout_0_vs_full_batch": _accumulated_vs_reference(llama, batch, 0.0, 1)}


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    from cxr.models.text.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    llama = build_tiny_model("llama", tmp / "llama", hidden_size=256, layers=4, heads=4, kv_heads=2)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, fn in (("fsdp", lambda: check_fsdp(llama, tmp)), ("grad_cache", lambda: check_grad_cache(llama))):
        try:
            report[name] = fn()
        except Exception as err:  # keep the other check's result
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        print(name, json.dumps(report[name], indent=1), flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
