"""Length-bucketed training batches (same draws, similar lengths per global batch, per rank under DDP) and the
loader settings of issue 12 item 7 (persistent workers, grey batches replicated on the device)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from _data_writers import write_manifest
from torch.utils.data import DistributedSampler

from cxr.data.bucketing import LengthBucketedSampler, LengthBucketing, padding_fraction
from cxr.data.datamodule import CXRDataModule
from cxr.data.sampling import RankShard, SeededSampler
from cxr.data.sources import CsvManifestSource

LENGTHS = [(7 * i * i + 3 * i) % 97 + 5 for i in range(200)]  # a spread of 5..101 "tokens"


def _batches(keys, size: int) -> list[list[int]]:
    return [[LENGTHS[k.index] for k in keys[i:i + size]] for i in range(0, len(keys) - size + 1, size)]


def test_same_draws_reordered_into_similar_length_batches() -> None:
    plain = list(SeededSampler(200, seed=3))
    bucketed_sampler = LengthBucketedSampler(SeededSampler(200, seed=3), LENGTHS, global_batch=8,
                                             window_batches=5, seed=3)
    bucketed = list(bucketed_sampler)
    assert Counter(bucketed) == Counter(plain)  # index AND per-draw seed: view, augmentation, text unchanged
    before, after = padding_fraction(_batches(plain, 8)), padding_fraction(_batches(bucketed, 8))
    assert after < before / 2, (before, after)
    # each window of 5 batches (40 draws) holds the same draws as before, only reordered
    for w in range(0, 200, 40):
        assert Counter(bucketed[w:w + 40]) == Counter(plain[w:w + 40])
    # the next epoch: new draws, new batch order; the same epoch again: identical
    assert list(bucketed_sampler) != bucketed
    again = LengthBucketedSampler(SeededSampler(200, seed=3), LENGTHS, global_batch=8, window_batches=5, seed=3)
    assert list(again) == bucketed


def test_short_last_batch_stays_last() -> None:
    keys = list(LengthBucketedSampler(SeededSampler(45, seed=0), LENGTHS, global_batch=8, window_batches=2))
    assert len(keys) == 45
    # windows of 16: [0,16) [16,32) [32,45): the last window has one full batch and a 5-draw remainder at the end
    tail_window = keys[32:]
    assert sorted(LENGTHS[k.index] for k in tail_window[8:]) == [LENGTHS[k.index] for k in tail_window[8:]]


def test_each_rank_gets_one_bucket_under_ddp() -> None:
    per_rank = []
    for rank in (0, 1):
        sampler = LengthBucketedSampler(SeededSampler(200, seed=1), LENGTHS, global_batch=2 * 8, window_batches=4)
        shard = RankShard(sampler, num_replicas=2, rank=rank)
        shard.set_epoch(0)
        per_rank.append(list(shard))
    plain = padding_fraction(_batches(list(SeededSampler(200, seed=1)), 8))
    for keys in per_rank:  # a rank's local batch of 8 = every other draw of one sorted global batch of 16
        assert padding_fraction(_batches(keys, 8)) < plain / 2
    assert Counter(per_rank[0] + per_rank[1]) == Counter(SeededSampler(200, seed=1))


def test_lightning_training_wrapper_would_undo_the_buckets() -> None:
    """Why RankShard exists: for training Lightning always wraps a plain sampler with ``shuffle=True``."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    sampler = LengthBucketedSampler(SeededSampler(200, seed=1), LENGTHS, global_batch=2 * 8, window_batches=4)
    wrapped = list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=0, shuffle=True))
    plain = padding_fraction(_batches(list(SeededSampler(200, seed=1)), 8))
    assert padding_fraction(_batches(wrapped, 8)) > 0.75 * plain


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("bucketed", [False, True])
def test_rank_shards_form_the_one_process_batches(world: int, bucketed: bool) -> None:
    """Global batch k of W ranks x b = batch k of one process with batch W*b, every epoch, for any W."""
    def base():
        plain = SeededSampler(197, seed=5)
        return LengthBucketedSampler(plain, LENGTHS, global_batch=world * 4, window_batches=3) if bucketed else plain

    b = 4
    one, shards = base(), [RankShard(base(), world, r) for r in range(world)]
    assert all(isinstance(s, DistributedSampler) for s in shards)  # so Lightning does not wrap it again
    for epoch in range(2):
        for s in shards:
            s.set_epoch(epoch)
        one.set_epoch(epoch)
        single = list(one)
        local = [list(s) for s in shards]
        assert len({len(keys) for keys in local}) == 1 and len(local[0]) == 197 // world
        for k in range(len(local[0]) // b):
            together = [key for keys in local for key in keys[k * b:(k + 1) * b]]
            assert Counter(together) == Counter(single[k * world * b:(k + 1) * world * b])


@pytest.mark.parametrize("bucketed", [False, True])
def test_rank_shard_resumes_mid_epoch_exactly(bucketed: bool) -> None:
    def shard(rank: int) -> RankShard:
        plain = SeededSampler(100, seed=2)
        return RankShard(LengthBucketedSampler(plain, LENGTHS, global_batch=8) if bucketed else plain, 2, rank)

    for rank in (0, 1):
        full = shard(rank)
        full.set_epoch(3)
        whole = list(full)
        resumed = shard(rank)
        resumed.start_at(3, 12)  # 12 of this rank's draws were trained on
        assert list(resumed) == whole[12:]
        assert resumed.epoch == 4  # the next pass continues with the following epoch


def _manifest(tmp_path: Path, n: int = 40) -> CsvManifestSource:
    rows = []
    for i in range(n):
        rows.append({"study_id": f"s{i}", "patient_id": f"p{i}", "image_path": f"img/{i}.png",
                     "findings": " ".join(["Lungs are clear."] * (1 + (i * 7) % 13)), "impression": f"Case {i}.",
                     "view": "PA", "split": "train" if i < 32 else "val"})
    return CsvManifestSource("m", str(write_manifest(tmp_path / "m", rows)))


def test_datamodule_bucketing_keeps_pairs_and_cuts_padding(tmp_path: Path) -> None:
    source = _manifest(tmp_path)

    def batches(bucketing):
        dm = CXRDataModule([source], image_size=16, batch_size=4, num_workers=0, length_bucketing=bucketing)
        dm.setup("fit")
        text_of = {r.key: t for r, t in zip(dm._dataset("train").records, dm._dataset("train").texts,
                                            strict=True)}
        out = list(dm.train_dataloader())
        for b in out:  # every image still comes with its own study's report
            assert [text_of[k] for k in b.study_keys] == b.texts
        return [[len(t) for t in b.texts] for b in out]

    plain, chars = batches(None), batches(LengthBucketing(window_batches=8))
    assert sorted(sum(plain, [])) == sorted(sum(chars, []))
    assert padding_fraction(chars) < padding_fraction(plain) / 2


def test_token_lengths_from_a_tokenizer(tiny_text_model) -> None:
    model = tiny_text_model("llama", hidden_size=16, layers=1, heads=2, kv_heads=1)
    texts = ["No acute process.", "Large right pneumothorax with mediastinal shift and a long sentence."]
    tokens = LengthBucketing(tokenizer=str(model)).lengths(texts)
    assert tokens[0] < tokens[1] and tokens != LengthBucketing().lengths(texts)
    with pytest.raises(ValueError, match="window_batches"):
        LengthBucketing(window_batches=0)


def test_persistent_workers_default_on_with_workers(tmp_path: Path) -> None:
    source = _manifest(tmp_path)
    dm = CXRDataModule([source], image_size=16, batch_size=4, num_workers=1)
    dm.setup("fit")
    assert dm.train_dataloader().persistent_workers and dm.val_dataloader().persistent_workers
    off = CXRDataModule([source], image_size=16, batch_size=4, num_workers=1, persistent_workers=False)
    off.setup("fit")
    assert not off.train_dataloader().persistent_workers
    assert not CXRDataModule([source], image_size=16, num_workers=0).persistent_workers
    with pytest.raises(ValueError, match="num_workers > 0"):
        CXRDataModule([source], image_size=16, num_workers=0, persistent_workers=True)


def test_grey_batches_for_a_three_channel_tower_are_replicated_on_the_device(tmp_path: Path) -> None:
    from cxr.data.transforms import TransformConfig
    from cxr.models.vision import VisionTower

    source = _manifest(tmp_path)
    dm = CXRDataModule([source], image_size=32, in_chans=3, batch_size=4, num_workers=0)
    dm.setup("fit")
    grey = next(iter(dm.val_dataloader())).images
    assert grey.shape[1] == 1  # uniform mean/std: the workers send one channel
    three = dm.transform.build(train=False)  # what the workers used to send
    record = dm.records("val")[0]
    want = three(dm.image_loader(record.images[0].path))
    assert want.shape[0] == 3
    torch.testing.assert_close(grey[0].expand(3, -1, -1), want, atol=1e-6, rtol=0)
    tower = VisionTower("test_vit", in_chans=3, image_size=32).eval()
    torch.testing.assert_close(tower(grey), tower(grey.repeat(1, 3, 1, 1)), atol=1e-6, rtol=0)
    clip = TransformConfig(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    per_channel = CXRDataModule([source], image_size=32, in_chans=3, batch_size=4, num_workers=0, transform=clip)
    per_channel.setup("fit")
    assert next(iter(per_channel.val_dataloader())).images.shape[1] == 3  # channels differ: built in the worker
