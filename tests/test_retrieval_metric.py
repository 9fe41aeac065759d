"""ImageTextRetrieval / retrieval_ranks against brute force, torchmetrics, tie rules, DDP padding and 2-rank DDP."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.retrieval import RetrievalHitRate

from cxr.metrics import ImageTextRetrieval, TieRule, retrieval_ranks, summarize_ranks
from cxr.metrics.ranking import positives_from_ids, positives_from_index


def _world(n: int, d: int = 16, per_study: int = 1, dup_every: int = 0, seed: int = 0, noise: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    study = torch.arange(n) // per_study
    base = torch.randn(int(study.max()) + 1, d, generator=g)
    img = base[study] + noise * torch.randn(n, d, generator=g)
    txt = base[study] + noise * torch.randn(n, d, generator=g)
    text_ids = study.clone() + 1000
    if dup_every:
        text_ids[study % dup_every == 0] = 7  # a "template" report shared by several studies
        dup = study % dup_every == 0
        # near-identical embeddings (exact ties are covered by the tie tests; argsort orders ties arbitrarily)
        txt[dup] = txt[dup][0] + 1e-3 * torch.randn(int(dup.sum()), d, generator=g)
    return img, txt, study, text_ids


def _bruteforce_hit_rank(scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """0-based position of the first correct candidate in a full descending argsort (no ties in random data)."""
    order = torch.argsort(scores, dim=1, descending=True)
    hits = torch.gather(pos, 1, order)
    return hits.float().argmax(dim=1)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_ranks_equal_bruteforce_and_chunk_invariant(chunk):
    g = torch.Generator().manual_seed(1)
    q, c = torch.randn(53, 12, generator=g), torch.randn(41, 12, generator=g)
    q_ids = torch.randint(0, 20, (53,), generator=g)
    c_ids = torch.randint(0, 20, (41,), generator=g)
    c_ids[:20] = torch.arange(20)  # every query has >= 1 positive
    res = retrieval_ranks(q, c, positives_from_ids((q_ids, c_ids)), chunk_size=chunk, topk=5)
    scores = q @ c.T
    pos = q_ids[:, None] == c_ids[None, :]
    assert torch.equal(res.ranks, _bruteforce_hit_rank(scores, pos))
    assert torch.equal(res.topk_indices, scores.topk(5, dim=1).indices)


def test_query_without_positive_is_flagged_and_counted_as_miss():
    q, c = torch.eye(3), torch.eye(3)
    res = retrieval_ranks(q, c, positives_from_ids((torch.tensor([0, 1, 9]), torch.tensor([0, 1, 2]))))
    assert res.ranks.tolist() == [0, 0, -1]
    s = summarize_ranks(res.ranks, [1])
    assert s.recall_at_k[1] == pytest.approx(2 / 3)
    assert s.num_without_positive == 1 and s.mean_rank == 1.0


def test_tie_rules_documented_behaviour():
    # Every score equal (a collapsed encoder): pessimistic -> rank N-1 (no credit), optimistic -> rank 0.
    q = torch.ones(4, 3)
    c = torch.ones(4, 3)
    pos = positives_from_index(torch.arange(4), 4)
    pess = retrieval_ranks(q, c, pos, tie_rule=TieRule.PESSIMISTIC).ranks
    opt = retrieval_ranks(q, c, pos, tie_rule="optimistic").ranks
    assert pess.tolist() == [3, 3, 3, 3]
    assert opt.tolist() == [0, 0, 0, 0]
    # Partial tie: the correct candidate ties with one incorrect one and is beaten by another.
    q = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.9, 0.0], [0.1, 0.0]])
    assert retrieval_ranks(q, c, positives_from_index(torch.tensor([0]), 4)).ranks.item() == 2
    assert retrieval_ranks(q, c, positives_from_index(torch.tensor([0]), 4), tie_rule="optimistic").ranks.item() == 1


def _metric_values(img, txt, study, text_ids, **kw):
    m = ImageTextRetrieval(ks=(1, 5, 10), **kw)
    half = len(study) // 2
    m.update(img[:half], txt[:half], study[:half], text_ids[:half], torch.arange(half))
    m.update(img[half:], txt[half:], study[half:], text_ids[half:], torch.arange(half, len(study)))
    return m.compute()


@pytest.mark.parametrize("dup", [True, False])
def test_study_protocol_equals_bruteforce_and_torchmetrics_hitrate(dup):
    img, txt, study, text_ids = _world(120, per_study=2, dup_every=9, seed=3)
    out = _metric_values(img, txt, study, text_ids, duplicate_texts_correct=dup)
    # reference: first image / text of each study, full cosine matrix
    rows = torch.arange(0, 120, 2)
    qi, ct = F.normalize(img[rows], dim=1), F.normalize(txt[rows], dim=1)
    s = qi @ ct.T
    pos = study[rows][:, None] == study[rows][None, :]
    if dup:
        pos |= text_ids[rows][:, None] == text_ids[rows][None, :]
    for direction, scores, p in (("i2t", s, pos), ("t2i", s.T, pos.T)):
        ranks = _bruteforce_hit_rank(scores, p)
        n = scores.shape[0]
        for k in (1, 5, 10):
            ref = (ranks < k).float().mean()
            assert out[f"{direction}_R@{k}"].item() == pytest.approx(ref.item())
            # torchmetrics >= 1.7.4 ignores scores <= 0, so feed a positive monotone transform of the cosine
            tm = RetrievalHitRate(top_k=k)
            tm.update((scores.flatten() + 1.0) / 2.0 + 1e-6, p.flatten(),
                      torch.arange(n).repeat_interleave(scores.shape[1]))
            assert out[f"{direction}_R@{k}"].item() == pytest.approx(tm.compute().item())
        assert out[f"{direction}_mean_rank"].item() == pytest.approx((ranks + 1).double().mean().item())
        assert out[f"{direction}_median_rank"].item() == pytest.approx((ranks + 1).double().median().item()
                                                                        if n % 2 else
                                                                        torch.quantile((ranks + 1).double(), 0.5).item())
        assert out[f"{direction}_num_queries"].item() == 60


def test_duplicates_count_as_correct_only_when_enabled():
    # two studies with the same report text and identical embeddings: with duplicates allowed both are hits
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    study, tids = torch.tensor([0, 1, 2]), torch.tensor([5, 5, 6])
    on = _metric_values(img, txt, study, tids, duplicate_texts_correct=True)
    off = _metric_values(img, txt, study, tids, duplicate_texts_correct=False)
    assert on["i2t_R@1"].item() == 1.0
    assert off["i2t_R@1"].item() == pytest.approx(1 / 3)  # pessimistic ties: studies 0 and 1 miss


def test_image_protocol_every_image_queries_and_any_image_hits():
    img, txt, study, text_ids = _world(90, per_study=3, seed=5)
    out = _metric_values(img, txt, study, text_ids, protocol="image", duplicate_texts_correct=False)
    assert out["i2t_num_queries"].item() == 90 and out["i2t_num_candidates"].item() == 30
    assert out["t2i_num_queries"].item() == 30 and out["t2i_num_candidates"].item() == 90
    t_rows = torch.arange(0, 90, 3)
    s = F.normalize(img, dim=1) @ F.normalize(txt[t_rows], dim=1).T  # (90 images, 30 texts)
    pos = study[:, None] == study[t_rows][None, :]
    r_i2t = _bruteforce_hit_rank(s, pos)
    r_t2i = _bruteforce_hit_rank(s.T, pos.T)
    assert out["i2t_R@5"].item() == pytest.approx((r_i2t < 5).float().mean().item())
    assert out["t2i_R@1"].item() == pytest.approx((r_t2i < 1).float().mean().item())


def test_distributed_sampler_padding_is_dropped():
    img, txt, study, text_ids = _world(30, seed=7)
    ref = _metric_values(img, txt, study, text_ids)
    m = ImageTextRetrieval()
    # rank-interleaved order plus two padded repeats, as DistributedSampler produces
    order = torch.cat([torch.arange(0, 30, 2), torch.arange(1, 30, 2), torch.tensor([0, 1])])
    m.update(img[order], txt[order], study[order], text_ids[order], order)
    out = m.compute()
    for key, value in ref.items():
        assert out[key].item() == pytest.approx(value.item()), key


def test_bad_shapes_are_rejected_with_names():
    m = ImageTextRetrieval()
    with pytest.raises(ValueError, match="study_ids"):
        m.update(torch.randn(3, 4), torch.randn(3, 4), torch.arange(2), torch.arange(3), torch.arange(3))
    with pytest.raises(RuntimeError, match="before any update"):
        ImageTextRetrieval().compute()


# ---------------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        img, txt, study, text_ids = _world(45, per_study=3, dup_every=4, seed=11)
        # DistributedSampler(shuffle=False) semantics: pad to a multiple of world by repeating the start
        idx = torch.cat([torch.arange(45), torch.arange(1)])[rank::world]
        m = ImageTextRetrieval(protocol="image")
        for chunk in idx.split(5):
            m.update(img[chunk], txt[chunk], study[chunk], text_ids[chunk], chunk)
        out = m.compute()
        torch.save({k: v.item() for k, v in out.items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    img, txt, study, text_ids = _world(45, per_study=3, dup_every=4, seed=11)
    ref = _metric_values(img, txt, study, text_ids, protocol="image")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got.keys() == {k for k in ref}
        for key, value in ref.items():
            assert got[key] == pytest.approx(value.item()), (rank, key)
