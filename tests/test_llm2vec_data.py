"""Single-task batch sampler, pair dataset/collation and MNTP masking."""

from __future__ import annotations

import pytest
import torch

from cxr.data.pairs.datamodule import PairDataset, collate_pairs
from cxr.data.pairs.pairs import PairRecord
from cxr.data.pairs.task_sampler import TaskBatchSampler
from cxr.data.pairs.tasks import TASK_SPECS, PairTask
from cxr.losses.mntp import IGNORE_INDEX, mntp_loss, mntp_mask

TASKS = ["a"] * 23 + ["b"] * 9 + ["c"] * 3


def test_global_batches_are_single_task_complete_and_seeded():
    s = TaskBatchSampler(TASKS, batch_size=2, world_size=2, seed=0)
    batches = s.global_batches()
    assert len(batches) == len(s) == 23 // 4 + 9 // 4 + 0  # incomplete chunks (and task c) dropped
    for b in batches:
        assert len(b) == 4 and len({TASKS[i] for i in b}) == 1
    assert len({i for b in batches for i in b}) == 4 * len(batches)  # no index repeats within an epoch
    assert TaskBatchSampler(TASKS, 2, world_size=2, seed=0).global_batches() == batches
    s.set_epoch(1)
    assert s.global_batches() != batches
    # tasks interleave across the epoch rather than running task by task
    order = [TASKS[b[0]] for b in batches]
    assert order != sorted(order) or len(set(order)) == 1


def test_ranks_take_disjoint_slices_of_each_global_batch():
    per_rank = [list(TaskBatchSampler(TASKS, 3, rank=r, world_size=2, seed=5)) for r in range(2)]
    glob = TaskBatchSampler(TASKS, 3, world_size=2, seed=5).global_batches()
    assert len(per_rank[0]) == len(per_rank[1]) == len(glob)
    for b0, b1, g in zip(*per_rank, glob, strict=False):
        assert b0 + b1 == g and len(b0) == len(b1) == 3
    with pytest.raises(ValueError):
        TaskBatchSampler(TASKS, 2, rank=2, world_size=2)


def _pairs():
    out = [PairRecord(f"findings {i}.", f"impression {i}.", None, PairTask.SUMMARIZE) for i in range(4)]
    out += [PairRecord(f"report {i}. Second {i}.", f"variant {i}.", f"error {i}.", PairTask.VARIANT) for i in range(4)]
    return out


def test_dataset_instruction_symmetry_and_borrowed_negatives():
    ds = PairDataset(_pairs(), seed=0, shuffle_prob=0.0)
    task, q, p, n = ds[0]
    assert task is PairTask.SUMMARIZE and q == (TASK_SPECS[PairTask.SUMMARIZE].instruction, "findings 0.")
    assert p == ("", "impression 0.")
    assert n[0] == "" and n[1].startswith("impression ") and n[1] != "impression 0."  # borrowed, same task
    seen_swap = False
    for epoch in range(10):
        ds.epoch_source = type("E", (), {"epoch": epoch})()
        seen_swap |= ds[4][1][1] == "variant 0."
        assert ds[4][3] == ("", "error 0.")
    assert seen_swap  # symmetric task swaps query/positive on some epochs
    batch = collate_pairs([ds[4], ds[5]])
    assert batch.task is PairTask.VARIANT and len(batch) == 2 and batch.negatives is not None
    with pytest.raises(ValueError, match="one task"):
        collate_pairs([ds[0], ds[4]])
    no_neg = PairDataset(_pairs(), use_negatives=False)
    assert collate_pairs([no_neg[0], no_neg[1]]).negatives is None


def test_reverse_prob_serves_asymmetric_pairs_the_other_way_round():
    from cxr.data.pairs.tasks import InstructionSet

    spec = TASK_SPECS[PairTask.SUMMARIZE]
    ds = PairDataset(_pairs(), seed=0, reverse_prob=1.0)
    task, q, p, n = ds[1]
    assert q == (spec.reverse_instruction, "impression 1.") and p == ("", "findings 1.")
    assert n[1].startswith("findings ") and n[1] != "findings 1."  # a borrowed negative of the findings side
    hard = PairDataset([PairRecord("findings 0.", "impression 0.", "wrong impression 0.", PairTask.SUMMARIZE),
                        PairRecord("findings 1.", "impression 1.", "wrong impression 1.", PairTask.SUMMARIZE)],
                       reverse_prob=1.0)
    assert hard[0][3] == ("", "findings 1.")  # the hard negative corrupts the impression: not a findings negative
    assert ds[5][1][0] == TASK_SPECS[PairTask.VARIANT].instruction  # symmetric tasks keep their instruction
    # some pairs each way at 0.5; none reversed at 0, with the authors' instructions, or without augmentation
    half = PairDataset(_pairs() * 8, seed=0, reverse_prob=0.5)
    assert 0 < sum(half[i][1][0] == spec.reverse_instruction for i in range(len(half.pairs)) if
                   half.pairs[i].task is PairTask.SUMMARIZE) < 32
    for other in (PairDataset(_pairs(), reverse_prob=0.0), PairDataset(_pairs(), reverse_prob=1.0, augment=False),
                  PairDataset(_pairs(), reverse_prob=1.0, instruction_set=InstructionSet.AUTHORS)):
        assert all(other[i][1][1].startswith("findings") for i in range(4))
    with pytest.raises(ValueError, match="reverse_prob"):
        PairDataset(_pairs(), reverse_prob=1.5)


def test_reverse_tasks_limit_which_tasks_are_reversed():
    from cxr.data.pairs.datamodule import PairDataModule, reversible_tasks

    classify = [PairRecord(f"report {i}.", f"labels {i}.", None, PairTask.CLASSIFY) for i in range(4)]
    ds = PairDataset(_pairs() + classify, seed=0, reverse_prob=1.0, reverse_tasks=[PairTask.CLASSIFY])
    assert ds[0][1] == (TASK_SPECS[PairTask.SUMMARIZE].instruction, "findings 0.")  # summarize kept forward
    assert ds[8][1] == (TASK_SPECS[PairTask.CLASSIFY].reverse_instruction, "labels 0.")  # classify reversed
    assert reversible_tasks(None) == {PairTask.SUMMARIZE, PairTask.CLASSIFY}
    assert reversible_tasks(["cxr3"]) == {PairTask.CLASSIFY}  # the authors' tags parse too
    with pytest.raises(ValueError, match="no reverse instruction"):
        reversible_tasks([PairTask.VARIANT])  # symmetric: swapped anyway, no reverse instruction
    with pytest.raises(ValueError, match="no reverse instruction"):
        PairDataModule(train_pairs="x.csv", reverse_tasks=[PairTask.VARIANT])


def test_mntp_mask_respects_candidates_and_shift():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 20), generator=g)
    attn = torch.ones_like(ids)
    attn[:, :4] = 0  # left padding
    cand = attn.clone()
    cand[:, 4] = 0  # BOS
    masked, labels = mntp_mask(ids, cand, attn, mask_token_id=3, probability=0.2, generator=g)
    chosen = labels != IGNORE_INDEX
    assert (masked[chosen] == 3).all() and (masked[~chosen] == ids[~chosen]).all()
    assert (labels[chosen] == ids[chosen]).all()
    assert not chosen[:, :5].any()  # padding, BOS never masked
    assert chosen.any(dim=1).all()
    rate = chosen.sum().item() / cand.sum().item()
    assert 0.15 < rate < 0.25
    # shifted: the first text token after padding can't be predicted from a pad position
    cand2 = attn.clone()
    _, labels2 = mntp_mask(ids, cand2, attn, 3, probability=0.99, generator=g)
    assert (labels2[:, 4] == IGNORE_INDEX).all() and (labels2[:, 5:] != IGNORE_INDEX).float().mean() > 0.9
    _, labels3 = mntp_mask(ids, cand2, attn, 3, probability=0.99, shifted=False, generator=g)
    assert (labels3[:, 4] != IGNORE_INDEX).float().mean() > 0.9


def test_mntp_loss_shift():
    vocab = 7
    labels = torch.full((1, 4), IGNORE_INDEX)
    labels[0, 2] = 5
    logits = torch.zeros(1, 4, vocab)
    logits[0, 1, 5] = 20.0  # position 1 predicts token 2 (shifted)
    assert mntp_loss(logits, labels, shifted=True).item() < 1e-6
    assert mntp_loss(logits, labels, shifted=False).item() > 1.0
    logits2 = torch.zeros(1, 4, vocab)
    logits2[0, 2, 5] = 20.0
    assert mntp_loss(logits2, labels, shifted=False).item() < 1e-6
