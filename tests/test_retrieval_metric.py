"""ImageTextRetrieval / retrieval_ranks against brute force, torchmetrics, tie rules, DDP padding and 2-rank DDP."""

from __future__ import annotations

import os

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
def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    img, txt, study, text_ids = _world(45, per_study=3, dup_every=4, seed=11)
    # DistributedSampler(shuffle=False) semantics: pad to a multiple of world by repeating the start
    idx = torch.cat([torch.arange(45), torch.arange(1)])[rank::world]
    m = ImageTextRetrieval(protocol="image")
    for chunk in idx.split(5):
        m.update(img[chunk], txt[chunk], study[chunk], text_ids[chunk], chunk)
    out = m.compute()
    torch.save({k: v.item() for k, v in out.items()}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow  # spawns processes (DDP / a killed or concurrent fill / train.py)
def test_two_process_ddp_equals_single_process(tmp_path):
    from _dist_helpers import run_gloo

    run_gloo(_ddp_worker, str(tmp_path))
    img, txt, study, text_ids = _world(45, per_study=3, dup_every=4, seed=11)
    ref = _metric_values(img, txt, study, text_ids, protocol="image")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got.keys() == {k for k in ref}
        for key, value in ref.items():
            assert got[key] == pytest.approx(value.item()), (rank, key)


# --------------------------------------------------------------------------- tiled pass vs the previous one
def _random_case(seed: int, quantised: bool):
    g = torch.Generator().manual_seed(seed)
    n, m = int(torch.randint(5, 90, (1,), generator=g)), int(torch.randint(5, 90, (1,), generator=g))
    q, c = torch.randn(n, 6, generator=g), torch.randn(m, 6, generator=g)
    if quantised:  # few distinct, exactly representable scores: many exact ties
        q, c = (q * 2).round() / 2, (c * 2).round() / 2
    pairs = [(torch.randint(0, 25, (n,), generator=g), torch.randint(0, 25, (m,), generator=g))]
    if seed % 2:  # a second relation (like duplicate texts) with larger groups
        pairs.append((torch.randint(0, 5, (n,), generator=g), torch.randint(0, 5, (m,), generator=g)))
    return q, c, pairs


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("tie", ["pessimistic", "optimistic"])
def test_tiled_pass_equals_previous_row_chunks_in_both_directions(seed, tie):
    """Both directions of one tiled pass give the ranks of the previous per-direction row-chunk metric, for
    tiles smaller than, around and larger than the cells, with exact ties and rows without positives."""
    from cxr.metrics.ranking import bidirectional_ranks, row_chunk_ranks

    q, c, pairs = _random_case(seed, quantised=seed % 4 == 0)
    pos = positives_from_ids(*pairs)
    pos_t = positives_from_ids(*[(b, a) for a, b in pairs])
    old_rows = row_chunk_ranks(q, c, lambda s, e: pos(s, e), 11, tie, topk=4)  # a plain callable: old path
    old_cols = row_chunk_ranks(c, q, lambda s, e: pos_t(s, e), 11, tie)
    assert (old_rows.ranks == -1).any() or (old_cols.ranks == -1).any() or seed % 2  # some lines lack one
    for tile in (5, 40, 64, 4096):
        new = bidirectional_ranks(q, c, pos, tile_size=tile, tie_rule=tie, topk=4)
        assert torch.equal(new.rows.ranks, old_rows.ranks), tile
        assert torch.equal(new.cols.ranks, old_cols.ranks), tile
        assert torch.allclose(new.rows.topk_scores, old_rows.topk_scores, atol=1e-6, rtol=0)
        if seed % 4:  # no exact ties: the same candidates in the same order
            assert torch.equal(new.rows.topk_indices, old_rows.topk_indices), tile
        got = (q @ c.T).gather(1, new.rows.topk_indices)  # the indices point at those scores
        assert torch.allclose(got, new.rows.topk_scores, atol=1e-6, rtol=0)


def test_tiled_pass_brute_force_with_many_row_blocks_and_templates():
    """Several row and column tiles, a permuted layout (template texts shared across the matrix) and top-k
    merged across tiles: ranks and top-k equal a full-matrix brute force."""
    from cxr.metrics.ranking import bidirectional_ranks

    g = torch.Generator().manual_seed(4)
    n = 400
    img = F.normalize(torch.randn(n, 32, generator=g), dim=1)
    txt = F.normalize(img + 0.8 * torch.randn(n, 32, generator=g), dim=1)
    ids = torch.arange(n)
    tids = ids + 10_000
    tids[torch.rand(n, generator=g) < 0.1] = 3  # one template shared by ~40 reports, spread over the matrix
    res = bidirectional_ranks(img, txt, positives_from_ids((ids, ids), (tids, tids)), tile_size=64, topk=10)
    s = img @ txt.T
    p = (tids[:, None] == tids[None, :]) | torch.eye(n, dtype=torch.bool)
    assert torch.equal(res.rows.ranks, _bruteforce_hit_rank(s, p))
    assert torch.equal(res.cols.ranks, _bruteforce_hit_rank(s.T, p.T))
    assert torch.allclose(res.rows.topk_scores, s.topk(10, dim=1).values, atol=1e-6, rtol=0)
    assert torch.equal(res.rows.topk_indices, s.topk(10, dim=1).indices)


def test_tiled_pass_gathers_rows_like_an_explicit_copy():
    from cxr.metrics.ranking import bidirectional_ranks

    g = torch.Generator().manual_seed(2)
    emb_q, emb_c = torch.randn(60, 8, generator=g), torch.randn(50, 8, generator=g)
    q_rows, c_rows = torch.randperm(60, generator=g)[:40], torch.randperm(50, generator=g)[:30]
    ids_q, ids_c = torch.randint(0, 12, (40,), generator=g), torch.randint(0, 12, (30,), generator=g)
    pos = positives_from_ids((ids_q, ids_c))
    a = bidirectional_ranks(emb_q, emb_c, pos, query_rows=q_rows, candidate_rows=c_rows, tile_size=16, topk=3)
    b = bidirectional_ranks(emb_q[q_rows], emb_c[c_rows], pos, tile_size=16, topk=3)
    for x, y in ((a.rows.ranks, b.rows.ranks), (a.cols.ranks, b.cols.ranks),
                 (a.rows.topk_indices, b.rows.topk_indices)):
        assert torch.equal(x, y)


def test_non_finite_embeddings_are_rejected_with_the_row():
    from cxr.metrics.ranking import bidirectional_ranks

    q = torch.randn(5, 4)
    q[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"query embeddings contain NaN or inf \(row 3\)"):
        bidirectional_ranks(q, torch.randn(5, 4), positives_from_index(torch.arange(5), 5))


def test_components_put_every_correct_pair_in_one_component():
    g = torch.Generator().manual_seed(9)
    t_q, t_c = torch.arange(80) + 100, torch.arange(70) + 100
    t_q[::9], t_c[::11] = 7, 7  # a template shared by a few rows and columns
    study_q, study_c = torch.randint(0, 150, (80,), generator=g), torch.randint(0, 150, (70,), generator=g)
    pos = positives_from_ids((study_q, study_c), (t_q, t_c))
    row_lab, col_lab = pos.components()
    mask = pos(0, 80)
    assert torch.equal(row_lab[:, None] == col_lab[None, :], (row_lab[:, None] == col_lab[None, :]) | mask)
    assert row_lab.unique().numel() > 1  # not one trivial component


@pytest.mark.parametrize("agree", [True, False])
def test_identical_embeddings_tie_across_cells_and_tiles(agree, monkeypatch):
    """A collapsed encoder (every embedding the same non-trivial vector) gets no credit under pessimistic
    ties, although correct pairs are scored in cells and the rest in tiles; with a GEMM whose products
    disagree (forced here) the pre-pass falls back to whole tiles and stays exact."""
    import cxr.metrics.ranking as ranking

    monkeypatch.setattr(ranking, "products_agree", lambda *a: agree)
    v = torch.randn(1, 24, generator=torch.Generator().manual_seed(3))
    q, c = v.expand(300, -1).contiguous(), v.expand(290, -1).contiguous()
    pos = positives_from_index(torch.arange(300) % 290, 290)
    res = ranking.bidirectional_ranks(q, c, pos, tile_size=128, topk=3)
    assert torch.equal(res.rows.ranks, torch.full((300,), 289))
    assert torch.equal(res.cols.ranks[:10], torch.full((10,), 299 - 1))  # columns 0..9 have two correct rows
    opt = ranking.bidirectional_ranks(q, c, pos, tile_size=128, tie_rule="optimistic")
    assert int(opt.rows.ranks.max()) == 0 and int(opt.cols.ranks.max()) == 0


def test_top1_path_equals_argmax():
    from cxr.metrics.ranking import bidirectional_ranks

    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(300, 8, generator=g), torch.randn(280, 8, generator=g)
    pos = positives_from_index(torch.arange(300) % 280, 280)
    s = q @ c.T
    for tile in (16, 64, 1024):
        r = bidirectional_ranks(q, c, pos, topk=1, tile_size=tile)
        assert torch.equal(r.rows.topk_indices[:, 0], s.argmax(1)), tile
        assert torch.allclose(r.rows.topk_scores[:, 0], s.amax(1), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ paper protocol
def _bruteforce_diagonal_ranks(scores: torch.Tensor, pessimistic: bool = True) -> tuple[torch.Tensor, ...]:
    """The authors' protocol by brute force: row i's (column j's) only correct entry is (i, i) ((j, j));
    rank = how many other entries of the row (column) score >= (pessimistic) or > it."""
    diag = scores.diagonal()
    if pessimistic:
        return (scores >= diag[:, None]).sum(1) - 1, (scores >= diag[None, :]).sum(0) - 1
    return (scores > diag[:, None]).sum(1), (scores > diag[None, :]).sum(0)


@pytest.mark.parametrize("tie", ["pessimistic", "optimistic"])
def test_paper_protocol_equals_bruteforce_diagonal(tie):
    """Every image row against every row's report; a multi-view study repeats its report (identical
    embeddings: exact ties with the row's own report), template reports repeat across studies."""
    img, txt, study, text_ids = _world(90, per_study=3, dup_every=4, seed=5)
    txt = txt[(torch.arange(90) // 3) * 3]  # the study's report at each of its image rows, bit for bit
    m = ImageTextRetrieval(ks=(1, 5, 10), protocol="paper", tie_rule=tie, chunk_size=32)
    m.update(img, txt, study, text_ids, torch.arange(90))
    d = m.compute_details()
    out = m.summarize(d)
    s = F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    r_i2t, r_t2i = _bruteforce_diagonal_ranks(s, tie == "pessimistic")
    assert torch.equal(d.i2t.ranks.ranks, r_i2t) and torch.equal(d.t2i.ranks.ranks, r_t2i)
    for direction in ("i2t", "t2i"):
        assert out[f"{direction}_num_queries"].item() == out[f"{direction}_num_candidates"].item() == 90
    if tie == "pessimistic":  # the other two views' identical reports always tie with the own one
        assert int(r_i2t.min()) >= 2 and out["i2t_R@1"].item() == 0.0
    study_protocol = _metric_values(img, txt, study, text_ids)  # one image per study, duplicates correct
    assert study_protocol["i2t_R@1"].item() > out["i2t_R@1"].item()


def test_paper_protocol_drops_ddp_padding_and_ignores_duplicate_setting():
    img, txt, study, text_ids = _world(40, per_study=2, dup_every=3, seed=8)
    ref = _metric_values(img, txt, study, text_ids, protocol="paper")
    m = ImageTextRetrieval(protocol="paper", duplicate_texts_correct=False)
    order = torch.cat([torch.arange(0, 40, 2), torch.arange(1, 40, 2), torch.tensor([0, 1])])  # padded
    m.update(img[order], txt[order], study[order], text_ids[order], order)
    for key, value in m.compute().items():
        assert value.item() == pytest.approx(ref[key].item()), key


@pytest.mark.parametrize("gathered", [False, True])
def test_normalize_in_tiles_equals_normalized_copies(gathered):
    """normalize=True divides each gathered block by its rows' norms: ranks and top-k scores are bit-identical
    to scoring F.normalize-d copies (exact ties of identical rows included), and the caller's rows are not
    modified (a slice of them is never divided in place)."""
    from cxr.metrics.ranking import bidirectional_ranks

    g = torch.Generator().manual_seed(5)
    q, c = 3 * torch.randn(70, 8, generator=g), 0.5 * torch.randn(60, 8, generator=g)
    c[10:20] = c[10] * 2.0  # same direction, other lengths: identical after normalising (exact ties)
    q[3] = 0.0  # a zero row stays zero, as with F.normalize
    q_rows = torch.randperm(70, generator=g)[:50] if gathered else None
    c_rows = torch.randperm(60, generator=g)[:45] if gathered else None
    nq, nc = (50, 45) if gathered else (70, 60)
    ids = (torch.randint(0, 20, (nq,), generator=g), torch.randint(0, 20, (nc,), generator=g))
    pos = positives_from_ids(ids)
    q0, c0 = q.clone(), c.clone()
    for tile in (16, 4096):
        got = bidirectional_ranks(q, c, pos, query_rows=q_rows, candidate_rows=c_rows, tile_size=tile, topk=3,
                                  normalize=True)
        ref = bidirectional_ranks(F.normalize(q, dim=1), F.normalize(c, dim=1), pos, query_rows=q_rows,
                                  candidate_rows=c_rows, tile_size=tile, topk=3)
        assert torch.equal(got.rows.ranks, ref.rows.ranks) and torch.equal(got.cols.ranks, ref.cols.ranks)
        assert torch.equal(got.rows.topk_scores, ref.rows.topk_scores)
    assert torch.equal(q, q0) and torch.equal(c, c0)
