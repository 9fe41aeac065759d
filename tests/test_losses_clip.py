"""CLIP/SigLIP losses: reference values, study-aware masking, authors' mode, and 2-rank DDP equivalence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cxr.losses.clip import ClipLossConfig, ClipLossKind, clamp_logit_scale_, clip_loss


def _reference_infonce(img, txt, scale, ignore=None):
    logits = scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    if ignore is not None:
        logits = logits.masked_fill(ignore, float("-inf"))
    labels = torch.arange(img.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def test_infonce_matches_open_clip_formula_without_duplicates() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    scale = torch.tensor(math.log(1 / 0.07))
    ids = torch.arange(6)
    out = clip_loss(img, txt, scale, ids, ids + 100)
    assert torch.allclose(out.loss, _reference_infonce(img, txt, scale), atol=1e-6)


def test_study_aware_mask_removes_same_study_and_same_text_negatives() -> None:
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    scale = torch.tensor(2.0)
    study = torch.tensor([1, 1, 2, 3, 4])  # two views of study 1
    text = torch.tensor([10, 11, 12, 13, 12])  # rows 2 and 4 share a report
    ignore = torch.zeros(5, 5, dtype=torch.bool)
    ignore[0, 1] = ignore[1, 0] = True
    ignore[2, 4] = ignore[4, 2] = True
    out = clip_loss(img, txt, scale, study, text)
    assert torch.allclose(out.loss, _reference_infonce(img, txt, scale, ignore), atol=1e-6)
    plain = clip_loss(img, txt, scale, study, text, ClipLossConfig(study_aware=False))
    assert not torch.allclose(out.loss, plain.loss)
    # a duplicate pair that is a perfect match of each other's text must not be pushed apart
    img2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt2 = img2.clone()
    dup = clip_loss(img2, txt2, torch.tensor(math.log(100)), torch.tensor([1, 1, 2]), torch.tensor([5, 5, 6]))
    assert dup.loss < 1e-3 and dup.i2t_acc == 1.0


def test_authors_mode_uses_raw_features_and_raw_scale() -> None:
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    scale = torch.tensor(2.5)
    cfg = ClipLossConfig(normalize=False, exp_scale=False, study_aware=False)
    logits = 2.5 * img @ txt.T
    labels = torch.arange(4)
    ref = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert torch.allclose(clip_loss(img, txt, scale, config=cfg).loss, ref, atol=1e-5)


def test_siglip_loss_and_defaults() -> None:
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    cfg = ClipLossConfig(kind=ClipLossKind.SIGLIP, study_aware=False)
    assert cfg.initial_scale() == pytest.approx(math.log(10))
    scale, bias = torch.tensor(math.log(10)), torch.tensor(-10.0)
    z = 10 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T - 10
    sign = 2 * torch.eye(4) - 1
    ref = -F.logsigmoid(sign * z).sum() / 4
    assert torch.allclose(clip_loss(img, txt, scale, config=cfg, logit_bias=bias).loss, ref, atol=1e-5)
    with pytest.raises(ValueError, match="logit_bias"):
        clip_loss(img, txt, scale, config=cfg)


def test_logits_in_fp32_under_bf16_autocast_and_clamp() -> None:
    img = torch.randn(4, 8, requires_grad=True)
    txt = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clip_loss(img, txt, torch.tensor(math.log(100)))
    assert out.loss.dtype == torch.float32
    assert ClipLossConfig().initial_scale() == pytest.approx(math.log(1 / 0.07))
    s = torch.nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale_(s)
    assert s.item() == pytest.approx(math.log(100))


def _ddp_worker(rank: int, world: int, img: torch.Tensor, txt: torch.Tensor, study, text, kind: str,
                out_dir: str) -> None:
    import torch.distributed as dist

    b = img.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    x = img[sl].clone().requires_grad_(True)
    y = txt[sl].clone().requires_grad_(True)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    bias = torch.nn.Parameter(torch.tensor(-1.0))
    cfg = ClipLossConfig(kind=ClipLossKind(kind))
    out = clip_loss(x, y, scale, study[sl], text[sl], cfg, bias if kind == "siglip" else None)
    out.loss.backward()
    # DDP averages parameter gradients over ranks; the scalar params are shared "parameters"
    for p in (scale, bias):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world
    loss = out.loss.detach().clone()
    dist.all_reduce(loss)
    # feature grads: per-rank grads of the local loss summed over ranks by gather_with_grad's backward;
    # divided by world (DDP's averaging) they equal the full-batch gradient
    torch.save((rank, (loss / world).item(), (x.grad / world).tolist(), (y.grad / world).tolist(),
                scale.grad.item(), bias.grad.item()), f"{out_dir}/rank{rank}.pt")


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_ddp_two_ranks_equals_full_batch(tmp_path, kind: str) -> None:
    from _dist_helpers import run_gloo

    g = torch.Generator().manual_seed(4)
    img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    study = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])  # duplicates inside and across ranks (3 and 3; 0 and 0)
    text = torch.tensor([10, 11, 12, 13, 14, 15, 12, 16])  # text 12 on rank 0 and rank 1
    run_gloo(_ddp_worker, img, txt, study, text, kind, str(tmp_path))
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    x = img.clone().requires_grad_(True)
    y = txt.clone().requires_grad_(True)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    bias = torch.nn.Parameter(torch.tensor(-1.0))
    ref = clip_loss(x, y, scale, study, text, ClipLossConfig(kind=ClipLossKind(kind)),
                    bias if kind == "siglip" else None)
    ref.loss.backward()
    assert results[0][1] == pytest.approx(ref.loss.item(), abs=1e-5)
    gx = torch.tensor(results[0][2] + results[1][2])
    gy = torch.tensor(results[0][3] + results[1][3])
    assert torch.allclose(gx, x.grad, atol=1e-5)
    assert torch.allclose(gy, y.grad, atol=1e-5)
    assert results[0][4] == pytest.approx(scale.grad.item(), abs=1e-5)
    if kind == "siglip":
        assert results[0][5] == pytest.approx(bias.grad.item(), abs=1e-5)
