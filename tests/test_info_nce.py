"""Hard-negative InfoNCE: reference values, and equality of 2-rank CPU DDP with the full-batch computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _dist_helpers import run_gloo

from cxr.losses.info_nce import hard_negative_info_nce, hard_negative_logits, in_batch_accuracy


def _reference(q, p, n, scale):
    """Brute-force per-query loop."""
    docs = torch.cat([p, n]) if n is not None else p
    total = 0.0
    for i in range(q.shape[0]):
        sims = torch.stack([F.cosine_similarity(q[i], d, dim=0) for d in docs]) * scale
        total = total - torch.log_softmax(sims, dim=0)[i]
    return total / q.shape[0]


@pytest.mark.parametrize("with_neg", [True, False])
def test_matches_bruteforce_reference(with_neg):
    g = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(6, 8, generator=g, dtype=torch.float64) for _ in range(3))
    loss = hard_negative_info_nce(q, p, n if with_neg else None, scale=20.0)
    assert torch.allclose(loss.double(), _reference(q, p, n if with_neg else None, 20.0), atol=1e-5)
    assert loss.dtype == torch.float32


def test_logit_shape_accuracy_and_perfect_alignment():
    q = torch.eye(4)
    out = hard_negative_logits(q, q.clone(), -q, scale=50.0)
    assert out.logits.shape == (4, 8) and out.targets.tolist() == [0, 1, 2, 3]
    assert in_batch_accuracy(out).item() == 1.0
    assert hard_negative_info_nce(q, q.clone(), -q).item() < 1e-6
    # hard negative identical to the positive: the query cannot prefer either → loss ≥ log 2
    assert hard_negative_info_nce(q, q.clone(), q.clone()).item() >= math.log(2) - 1e-6
    with pytest.raises(ValueError, match="same shape"):
        hard_negative_info_nce(torch.randn(3, 4), torch.randn(2, 4))


def _make_batch():
    g = torch.Generator().manual_seed(1)
    enc = torch.nn.Linear(5, 3)
    with torch.no_grad():
        enc.weight.copy_(torch.randn(3, 5, generator=g))
        enc.bias.copy_(torch.randn(3, generator=g))
    xq, xp, xn = (torch.randn(8, 5, generator=g) for _ in range(3))
    return enc, xq, xp, xn


def _full_batch():
    enc, xq, xp, xn = _make_batch()
    loss = hard_negative_info_nce(enc(xq), enc(xp), enc(xn))
    loss.backward()
    return loss.detach(), enc.weight.grad.clone(), enc.bias.grad.clone()


def _worker(rank: int, world: int, out_file: str) -> None:
    enc, xq, xp, xn = _make_batch()
    sl = slice(rank * 4, rank * 4 + 4)
    loss = hard_negative_info_nce(enc(xq[sl]), enc(xp[sl]), enc(xn[sl]))
    loss.backward()
    # what DDP does: average parameter gradients (and we average the per-rank losses to compare)
    stats = [loss.detach().clone(), enc.weight.grad.clone(), enc.bias.grad.clone()]
    for t in stats:
        dist.all_reduce(t)
        t /= world
    if rank == 0:
        torch.save(stats, out_file)


@pytest.mark.slow  # spawns processes (DDP / a killed or concurrent fill / train.py)
@pytest.mark.timeout(120)
def test_two_rank_ddp_equals_full_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    run_gloo(_worker, str(out))
    loss, gw, gb = torch.load(out, weights_only=True)
    ref_loss, ref_gw, ref_gb = _full_batch()
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert torch.allclose(gw, ref_gw, atol=1e-5) and torch.allclose(gb, ref_gb, atol=1e-5)
    assert ref_gw.abs().sum() > 0  # the comparison is not vacuous
