"""CLIPAlignModule: construction errors, checkpoint round trip, a short run beating chance, LoRA end to end."""

from __future__ import annotations

import math
import random

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, Dataset

from cxr.data.batch import ImageTextBatch
from cxr.models.clip_module import CLIPAlignModule
from cxr.models.text.tower import TextTower
from cxr.models.vision import VisionTower
from cxr.records import stable_id

FINDINGS = ["No acute cardiopulmonary process.", "Large right pneumothorax with mediastinal shift.",
            "Small left pleural effusion with adjacent atelectasis.", "Moderate cardiomegaly.",
            "Right lower lobe consolidation concerning for pneumonia.", "Endotracheal tube tip above the carina.",
            "Hyperinflated lungs consistent with emphysema.", "Left upper lobe nodule measuring 8 mm."]


class PatternPairs(Dataset):
    """Each study shows one of K class patterns (+ noise) and reports that class's finding."""

    def __init__(self, n: int, seed: int, size: int = 32) -> None:
        g = torch.Generator().manual_seed(1234)  # class patterns shared by every split
        self.patterns = torch.randn(len(FINDINGS), 1, size, size, generator=g)
        rng = random.Random(seed)
        self.items = [(i, rng.randrange(len(FINDINGS))) for i in range(n)]
        self.noise = torch.Generator().manual_seed(seed)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        idx, c = self.items[i]
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        img = self.patterns[c] + 0.5 * torch.randn(self.patterns[c].shape, generator=g)
        return img, f"[FINDINGS] {FINDINGS[c]}", f"s{self.seed}:{idx}", i


def collate(samples) -> ImageTextBatch:
    imgs, texts, keys, idx = zip(*samples, strict=False)
    return ImageTextBatch(images=torch.stack(imgs), texts=list(texts), study_keys=list(keys),
                          study_ids=torch.tensor([stable_id(k) for k in keys]),
                          text_ids=torch.tensor([stable_id(t) for t in texts]),
                          sample_index=torch.tensor(idx), labels=torch.full((len(keys), 14), -2, dtype=torch.int8),
                          sources=["toy"] * len(keys))


class ToyDataModule(LightningDataModule):
    """Stands in for CXRDataModule: the same ``texts(split)`` / ``shuffle_prob`` interface."""

    def __init__(self, batch_size: int = 16, shuffle_prob: float = 0.0) -> None:
        super().__init__()
        self.shuffle_prob = shuffle_prob
        self.batch_size = batch_size
        self.sets = {"train": PatternPairs(128, 1), "val": PatternPairs(48, 2), "test": PatternPairs(48, 3)}

    def texts(self, split) -> list[str]:
        ds = self.sets[getattr(split, "value", split)]
        return list(dict.fromkeys(ds[i][1] for i in range(len(ds))))

    def train_dataloader(self):
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True, drop_last=True,
                          collate_fn=collate, generator=torch.Generator().manual_seed(0))

    def val_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=self.batch_size, collate_fn=collate)

    def test_dataloader(self):
        return DataLoader(self.sets["test"], batch_size=self.batch_size, collate_fn=collate)

    def predict_dataloader(self):
        return self.test_dataloader()


@pytest.fixture(scope="module")
def minilm_free_encoder(tmp_path_factory):
    from cxr.models.text.tiny import build_tiny_model

    return build_tiny_model("bert", tmp_path_factory.mktemp("bert") / "m", hidden_size=32, layers=1, seed=0)


@pytest.fixture(scope="module")
def tiny_llama(tiny_text_model):
    return tiny_text_model("llama", hidden_size=32, layers=2)


def _module(encoder, cache_dir, **kw) -> CLIPAlignModule:
    torch.manual_seed(0)
    text = TextTower(str(encoder), use_cache=cache_dir is not None, cache_dir=cache_dir and str(cache_dir),
                     instruction=None, **kw.pop("text", {}))
    vision = VisionTower("resnet18", in_chans=1, image_size=32)
    return CLIPAlignModule(vision, text, embed_dim=32, **kw)


def _trainer(tmp_path, **kw) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


def test_hyperparameters_rebuild_both_towers_without_the_cli(minilm_free_encoder, tmp_path) -> None:
    module = _module(minilm_free_encoder, None, head_init_std=2.0)
    hp = dict(module.hparams)
    assert hp["vision"]["class_path"] == "cxr.models.vision.VisionTower"
    assert hp["text"]["init_args"]["model_name_or_path"] == str(minilm_free_encoder)
    torch.save(hp, tmp_path / "hp.pt")  # plain values only: loadable with weights_only=True
    rebuilt = CLIPAlignModule(**torch.load(tmp_path / "hp.pt", weights_only=True))
    assert (rebuilt.vision.model_name, rebuilt.vision.image_size, rebuilt.vision.in_chans) == ("resnet18", 32, 1)
    assert rebuilt.text.model_name_or_path == str(minilm_free_encoder) and rebuilt.hparams.head_init_std == 2.0
    rebuilt.load_state_dict(module.state_dict())
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval().encode_images(images), module.eval().encode_images(images))


def test_towers_from_other_packages_are_not_rebuilt() -> None:
    from cxr.models.init_record import build_from_record

    with pytest.raises(ValueError, match="only cxr classes"):
        build_from_record({"class_path": "os.system", "init_args": {}}, VisionTower)


def test_unknown_vision_model_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="close matches: .*resnet18"):
        VisionTower("resnet181")


def test_cache_and_text_shuffle_are_refused(tmp_path, minilm_free_encoder) -> None:
    module = _module(minilm_free_encoder, tmp_path / "cache")
    with pytest.raises(ValueError, match="shuffle_prob"):
        _trainer(tmp_path, max_steps=1).fit(module, ToyDataModule(shuffle_prob=0.3))


@pytest.mark.slow
def test_short_run_beats_chance_and_checkpoint_roundtrip(tmp_path, minilm_free_encoder) -> None:
    torch.manual_seed(0)
    dm = ToyDataModule()
    module = _module(minilm_free_encoder, tmp_path / "cache", lr=3e-3, text_lr_scale=3.0, layer_decay=1.0,
                     warmup_steps=2)
    trainer = _trainer(tmp_path, max_epochs=4, num_sanity_val_steps=0, check_val_every_n_epoch=4)
    trainer.fit(module, dm)
    assert module.text.encoder is None  # the cache served every text; the LLM was never loaded for training
    res = trainer.test(module, dm, verbose=False)[0]
    # 8 distinct reports among 48 studies; duplicates count as correct, so chance R@1 ≈ 1/8
    assert res["test/i2t_R@1"] > 0.5, res
    assert res["test/t2i_R@1"] > 0.5, res
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not any(k.startswith("text.encoder.") for k in sd)
    assert "logit_scale" in sd and any(k.startswith("text_adapter.") for k in sd)
    fresh = _module(minilm_free_encoder, tmp_path / "cache")
    assert fresh.logit_scale.item() == pytest.approx(math.log(1 / 0.07))  # CLIP init (paper §C.3)
    loaded = CLIPAlignModule.load_from_checkpoint(ckpt, vision=fresh.vision, text=fresh.text)
    batch = collate([dm.sets["test"][i] for i in range(6)])
    module.eval()
    loaded.eval()
    with torch.no_grad():
        a, b = module(batch), loaded(batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with torch.no_grad():
        loaded.logit_scale.fill_(7.0)  # as if an optimiser step overshot
    loaded.on_train_batch_end(None, batch, 0)
    assert loaded.logit_scale.item() == pytest.approx(math.log(100))  # clamped after every step
    # a checkpoint that lost a trainable weight is refused (strict=False would keep the random projection)
    ckpt_data = torch.load(ckpt, weights_only=True)
    del ckpt_data["state_dict"]["image_proj.weight"]
    torch.save(ckpt_data, tmp_path / "broken.ckpt")
    fresh = _module(minilm_free_encoder, tmp_path / "cache")
    with pytest.raises(RuntimeError, match=r"trainable weights missing.*image_proj\.weight"):
        CLIPAlignModule.load_from_checkpoint(tmp_path / "broken.ckpt", vision=fresh.vision, text=fresh.text)


@pytest.mark.slow
def test_tiny_llama_with_lora_runs_online(tmp_path, tiny_llama) -> None:
    from cxr.models.text.lora import LoraSettings

    module = _module(tiny_llama, None, text={"lora": LoraSettings(r=4, alpha=8, dropout=0.0)}, lr=1e-3)
    dm = ToyDataModule(batch_size=8)
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    module.configure_model()
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if "lora_B" in n}
    assert lora and all(not p.any() for p in lora.values())  # LoRA B starts at zero
    trainer.fit(module, dm)
    moved = [n for n, p in module.named_parameters() if "lora_B" in n and p.detach().abs().sum() > 0]
    assert moved, "LoRA weights got no gradient: text was not encoded online"
    frozen = [n for n, p in module.text.encoder.named_parameters() if p.requires_grad and "lora_" not in n]
    assert not frozen, frozen
    ckpt = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(ckpt)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    enc_keys = [k for k in sd if k.startswith("text.encoder.")]
    assert enc_keys and all("lora_" in k for k in enc_keys)
    # reload for eval: the frozen LLM comes from its files, the trained LoRA weights from the checkpoint
    fresh = _module(tiny_llama, None, text={"lora": LoraSettings(r=4, alpha=8, dropout=0.0)})
    loaded = CLIPAlignModule.load_from_checkpoint(ckpt, vision=fresh.vision, text=fresh.text).eval()
    batch = collate([dm.sets["test"][i] for i in range(4)])
    module.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.encode_texts(batch.texts), module.encode_texts(batch.texts), atol=1e-6)
    # LoRA weights into a tower built without LoRA: refused, not silently dropped
    plain = _module(tiny_llama, None)
    with pytest.raises(RuntimeError, match="unexpected weights.*lora_"):
        CLIPAlignModule.load_from_checkpoint(ckpt, vision=plain.vision, text=plain.text)


def test_predict_writer_and_export_roundtrip(tmp_path, minilm_free_encoder) -> None:
    import pandas as pd
    from safetensors.torch import load_file

    from cxr.callbacks.embedding_writer import EmbeddingWriter
    from cxr.models.clip_export import export_clip, load_exported_clip

    dm = ToyDataModule()
    module = _module(minilm_free_encoder, tmp_path / "cache")
    module.text.fill_cache(dm.texts("test"))
    writer = EmbeddingWriter(str(tmp_path / "pred"))
    _trainer(tmp_path, callbacks=[writer]).predict(module, dm, return_predictions=False)
    emb = load_file(str(tmp_path / "pred" / "embeddings.safetensors"))
    meta = pd.read_csv(tmp_path / "pred" / "meta.csv")
    assert emb["image_emb"].shape == (48, 32) and len(meta) == 48
    assert "text" not in meta.columns and "Pneumothorax" in meta.columns
    exported = load_exported_clip(export_clip(module, tmp_path / "export"))
    batch = collate([dm.sets["test"][i] for i in range(4)])
    module.eval()
    with torch.no_grad():
        assert torch.allclose(exported.encode_images(batch.images), module.encode_images(batch.images))
        feats = module.text(batch.texts)
        assert torch.allclose(exported.text_adapter(feats), module.text_adapter(feats))
