"""CXRDataModule on small CSV manifests: batches, seeding, mixing, view policy, helpers, start-up checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from _data_writers import write_image, write_manifest

from cxr.data.batch import ImageTextBatch
from cxr.data.datamodule import CXRDataModule
from cxr.data.sampling import SeededSampler
from cxr.data.sources import CsvManifestSource
from cxr.data.validation import DataValidationError
from cxr.records import Split, stable_id


def manifest(tmp_path: Path, name: str, n: int = 12, split: str | None = None) -> CsvManifestSource:
    rows = []
    for i in range(n):
        rows.append({"study_id": f"{name}{i}", "patient_id": f"{name}p{i}", "image_path": f"img/{i}.png",
                     "findings": f"Finding {i} here. Another sentence {i}.", "impression": f"Impression {i}.",
                     "view": "PA", "Edema": "1" if i % 2 else "", "split": split or ("train" if i < 8 else
                                                                                      "val" if i < 10 else "test")})
    return CsvManifestSource(name, str(write_manifest(tmp_path / name, rows)))


def make_dm(tmp_path: Path, **kwargs) -> CXRDataModule:
    defaults = dict(sources=[manifest(tmp_path, "a")], image_size=32, batch_size=4, num_workers=0)
    defaults.update(kwargs)
    return CXRDataModule(**defaults)


def test_batches(tmp_path: Path) -> None:
    dm = make_dm(tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, ImageTextBatch) and len(batch) == 4
    assert batch.images.shape == (4, 1, 32, 32) and batch.images.dtype == torch.float32
    assert batch.labels.dtype == torch.int8 and batch.labels.shape == (4, 14)
    assert batch.study_ids.tolist() == [stable_id(k) for k in batch.study_keys]
    assert all(t.startswith("[FINDINGS] Finding") and "[IMPRESSION]" in t for t in batch.texts)
    assert len(dm.train_dataloader()) == 2  # 8 train studies, drop_last
    val = list(dm.val_dataloader())
    assert sum(len(b) for b in val) == 2 and val[0].sample_index.tolist() == [0, 1]


def test_train_order_is_seeded(tmp_path: Path) -> None:
    def keys(seed: int) -> list[str]:
        dm = make_dm(tmp_path, seed=seed)
        return [k for b in dm.train_dataloader() for k in b.study_keys]

    assert keys(1) == keys(1)
    assert keys(1) != keys(2)
    assert sorted(keys(1)) == sorted(f"a:a{i}" for i in range(8))  # a permutation: every study once


def test_train_augmentation_is_seeded(tmp_path: Path) -> None:
    """Random crops/affine/noise repeat under the same seed, whatever the number of workers."""

    def images(seed: int, workers: int = 0) -> torch.Tensor:
        dm = make_dm(tmp_path, seed=seed, num_workers=workers)
        return torch.cat([b.images for b in dm.train_dataloader()])

    first = images(1)
    assert torch.equal(first, images(1))
    assert torch.equal(first, images(1, workers=1))
    assert not torch.equal(first, images(2))


def test_mixing_weights(tmp_path: Path) -> None:
    a, b = manifest(tmp_path, "a"), manifest(tmp_path, "b", n=12)
    dm = make_dm(tmp_path, sources=[a, b], train_weights=[1.0, 0.0])
    assert {s for batch in dm.train_dataloader() for s in batch.sources} == {"a"}
    dm = make_dm(tmp_path, sources=[a, b], train_weights=[1.0, 3.0], samples_per_epoch=4000, batch_size=100)
    sampler = dm.train_dataloader().sampler  # count the draws without decoding 4000 images
    items = dm._dataset(Split.TRAIN).source_of_items()
    counts = Counter(items[k.index] for k in sampler)
    assert 0.2 < counts["a"] / sum(counts.values()) < 0.3


def test_view_policy_and_eval_image(tmp_path: Path) -> None:
    rows = [
        {"study_id": "s1", "patient_id": "p1", "image_path": "i/1l.png;i/1ap.png;i/1pa.png", "view": "LATERAL;AP;PA",
         "report": "One.", "split": "test"},
        {"study_id": "s2", "patient_id": "p2", "image_path": "i/2l.png", "view": "LATERAL", "report": "Two.",
         "split": "test"},
        {"study_id": "s3", "patient_id": "p3", "image_path": "i/3ap.png;i/3l.png", "view": "AP;LL", "report": "Three.",
         "split": "test"},
    ]
    src = CsvManifestSource("v", str(write_manifest(tmp_path, rows, write_images=False)))
    for p in ("1l", "1ap", "1pa", "2l", "3ap", "3l"):
        write_image(tmp_path / "i" / f"{p}.png")
    dm = make_dm(tmp_path, sources=[src])
    recs = dm.records("test")
    assert [r.study_id for r in recs] == ["s1", "s3"]  # lateral-only study skipped
    ds = dm._dataset(Split.TEST)
    assert [it.images[0].path.rsplit("/", 1)[1] for it in ds.items] == ["1pa.png", "3ap.png"]
    dm = make_dm(tmp_path, sources=[src], keep_lateral_only=True)
    assert [r.study_id for r in dm.records("test")] == ["s1", "s2", "s3"]
    assert dm.texts("test") == ["One.", "Two.", "Three."]


def test_eval_unit_image_yields_every_eligible_image_preferred_view_first(tmp_path: Path) -> None:
    """``eval_unit=image`` (what the image and paper retrieval protocols score): one sample per eligible
    image, the study's deterministic evaluation image first, so the lowest sample index still stands for it."""
    rows = [
        {"study_id": "s1", "patient_id": "p1", "image_path": "i/1l.png;i/1ap.png;i/1pa.png",
         "view": "LATERAL;AP;PA", "report": "One.", "split": "test"},
        {"study_id": "s3", "patient_id": "p3", "image_path": "i/3ap.png;i/3l.png", "view": "AP;LL",
         "report": "Three.", "split": "test"},
    ]
    src = CsvManifestSource("v", str(write_manifest(tmp_path, rows, write_images=False)))
    for p in ("1l", "1ap", "1pa", "3ap", "3l"):
        write_image(tmp_path / "i" / f"{p}.png")
    names = {}
    for unit, policy in (("image", "frontal"), ("image", "all"), ("study", "all")):
        dm = make_dm(tmp_path, sources=[src], eval_unit=unit, view_policy=policy)
        names[(unit, policy)] = [it.images[0].path.rsplit("/", 1)[1] for it in dm._dataset(Split.TEST).items]
    assert names[("image", "frontal")] == ["1pa.png", "1ap.png", "3ap.png"]
    assert names[("image", "all")] == ["1pa.png", "1ap.png", "1l.png", "3ap.png", "3l.png"]
    assert names[("study", "all")] == ["1pa.png", "3ap.png"]
    dm = make_dm(tmp_path, sources=[src], eval_unit="image")
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch.sample_index.tolist() == [0, 1, 2] and batch.study_ids[0] == batch.study_ids[1]
    assert batch.texts[0] == batch.texts[1] == "One." and batch.text_ids[0] == batch.text_ids[1]


def test_study_sampling_draws_random_views(tmp_path: Path) -> None:
    rows = [{"study_id": "s", "patient_id": "p", "image_path": "i/a.png;i/b.png", "view": "PA;AP",
             "report": "Text.", "split": "train"}]
    src = CsvManifestSource("v", str(write_manifest(tmp_path, rows, write_images=False)))
    write_image(tmp_path / "i/a.png", seed=1)
    write_image(tmp_path / "i/b.png", seed=2)
    dm = make_dm(tmp_path, sources=[src], batch_size=1, samples_per_epoch=40)
    means = {round(float(b.images.mean()), 4) for b in dm.train_dataloader()}
    assert len(means) >= 2  # both views drawn (train augmentation may vary more)
    dm = make_dm(tmp_path, sources=[src], sampling="image", batch_size=1)
    assert len(dm._dataset(Split.TRAIN)) == 2


def test_text_shuffle_and_texts_helper(tmp_path: Path) -> None:
    dm = make_dm(tmp_path, shuffle_prob=1.0, batch_size=8)
    texts = set(dm.texts("train"))
    shuffled = [t for b in dm.train_dataloader() for t in b.texts]
    assert any(t not in texts for t in shuffled)  # every sample shuffled; 2-sentence findings flip often
    assert all(t.startswith("[FINDINGS]") for t in shuffled)
    assert set(dm.val_dataloader().dataset.texts) >= set(dm.texts("val"))


def test_eval_sources_are_held_out(tmp_path: Path) -> None:
    held = manifest(tmp_path, "h", n=6, split="test")
    dm = make_dm(tmp_path, eval_sources=[held])
    assert {r.source for r in dm.records("train")} == {"a"}
    assert Counter(r.source for r in dm.records("test")) == {"a": 2, "h": 6}
    keys = [k for b in dm.predict_dataloader() for k in b.study_keys]
    assert keys == [k for b in dm.predict_dataloader() for k in b.study_keys] and len(keys) == 8


def test_bad_config_fails_at_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("path_x,report\nnot/there.png,text\n")
    with pytest.raises(DataValidationError, match="missing column"):
        CXRDataModule(sources=[CsvManifestSource("x", str(bad))])
    with pytest.raises(DataValidationError, match="not found"):
        CXRDataModule(sources=[CsvManifestSource("x", str(tmp_path / "nope.csv"))])
    with pytest.raises(ValueError, match="unique"):
        make_dm(tmp_path, sources=[manifest(tmp_path, "a"), manifest(tmp_path, "a")])
    with pytest.raises(ValueError, match="train_weights"):
        make_dm(tmp_path, train_weights=[1.0, 2.0])


def test_sampler_under_distributed_wrapper() -> None:
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    parts = []
    for rank in (0, 1):
        sampler = SeededSampler(10, seed=5)
        wrapped = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False)
        wrapped.set_epoch(0)
        parts.append([k.index for k in wrapped])
    assert len(parts[0]) == len(parts[1]) == 5
    assert sorted(parts[0] + parts[1]) == list(range(10))


def test_transform_config_sets_normalisation_and_eval_geometry(tmp_path: Path) -> None:
    """The preset, mean/std and eval resize come from the DataModule's ``transform`` (e.g. CLIP mean/std)."""
    import numpy as np
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    from cxr.data.images import load_image
    from cxr.data.transforms import EvalResize, TransformConfig, build_transform

    clip = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
            "eval_resize": "CROP", "strength": "LIGHT"}
    source = manifest(tmp_path, "a")
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    cfg = parser.parse_object({"data": {"class_path": "cxr.data.datamodule.CXRDataModule", "init_args": {
        "sources": [{"class_path": "cxr.data.sources.CsvManifestSource",
                     "init_args": {"name": "a", "csv_path": str(source.csv_path)}}],
        "image_size": 24, "in_chans": 3, "batch_size": 2, "num_workers": 0,
        "transform": {**clip, "image_size": 999}}}})  # geometry comes from the DataModule, not the group
    dm = parser.instantiate_classes(cfg).data
    assert dm.transform.image_size == 24 and dm.transform.in_chans == 3
    assert dm.transform.eval_resize is EvalResize.CROP and dm.transform.mean == tuple(clip["mean"])
    batch = next(iter(dm.test_dataloader()))
    path = dm.records("test")[0].images[0].path
    want = build_transform(False, 24, in_chans=3, mean=clip["mean"], std=clip["std"], eval_resize="crop")
    np.testing.assert_allclose(batch.images[0].numpy(), want(load_image(path)).numpy(), atol=1e-6)
    default = make_dm(tmp_path, image_size=24, in_chans=3)
    assert not torch.allclose(next(iter(default.test_dataloader())).images[0], batch.images[0])
    with pytest.raises(ValueError, match="std must be positive"):
        make_dm(tmp_path, transform=TransformConfig(std=0.0))
