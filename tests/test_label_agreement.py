"""Clinical label agreement: hand-checked cases, sklearn F1 reference, uncertain policies, metric integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from cxr.labels import (
    CHEXPERT_OBSERVATIONS,
    OBSERVATION_INDEX,
    LabelState,
    UncertainPolicy,
    labels_from_mapping,
)
from cxr.metrics import ImageTextRetrieval
from cxr.metrics.label_agreement import (
    COMPETITION_OBSERVATIONS,
    LabelAgreementOptions,
    label_precision_at_k,
    top1_label_f1,
)


def _lab(**values) -> torch.Tensor:
    return torch.from_numpy(labels_from_mapping({k.replace("_", " "): v for k, v in values.items()}))


def test_exact_and_overlap_precision_hand_checked():
    q = torch.stack([_lab(Edema=1, Cardiomegaly=1), _lab()])  # second query: normal (no positives)
    r = torch.stack([
        torch.stack([_lab(Edema=1, Cardiomegaly=1), _lab(Edema=1), _lab(Pneumothorax=1)]),
        torch.stack([_lab(No_Finding=1), _lab(Support_Devices=1), _lab(Atelectasis=1)]),
    ])
    out = label_precision_at_k(q, r, ks=[1, 3])
    # query 0: exact [1,0,0], overlap [1,1,0]. Query 1 is normal -> "No Finding" (CheXpert rule, which ignores
    # Support Devices): exact [1,0,0] (SD differs), overlap [1,1,0] (No Finding shared); without SD exact [1,1,0].
    assert out["exact_P@1"] == pytest.approx(1.0)
    assert out["overlap_P@1"] == pytest.approx(1.0)
    assert out["exact_P@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert out["overlap_P@3"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    no_sd = label_precision_at_k(q, r, ks=[3], options=LabelAgreementOptions(exclude_support_devices=True))
    assert no_sd["exact_P@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_uncertain_policy_changes_matches():
    q = _lab(Edema=-1)[None]
    r = _lab(Edema=1)[None, None]
    zeros = label_precision_at_k(q, r, [1], LabelAgreementOptions(uncertain_policy=UncertainPolicy.ZEROS))
    ones = label_precision_at_k(q, r, [1], LabelAgreementOptions(uncertain_policy=UncertainPolicy.ONES))
    ignore = label_precision_at_k(q, r, [1], LabelAgreementOptions(uncertain_policy=UncertainPolicy.IGNORE))
    assert zeros["overlap_P@1"] == 0.0 and zeros["exact_P@1"] == 0.0
    assert ones["overlap_P@1"] == 1.0 and ones["exact_P@1"] == 1.0
    # ignore: the uncertain Edema is not compared; the No-Finding rule makes both sides "normal" elsewhere
    assert ignore["exact_P@1"] == 1.0


@pytest.mark.parametrize("obs", [COMPETITION_OBSERVATIONS, CHEXPERT_OBSERVATIONS])
def test_top1_f1_matches_sklearn(obs):
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.choice([1, 0, -1, -2], size=(200, 14)).astype(np.int8))
    p = torch.from_numpy(rng.choice([1, 0, -1, -2], size=(200, 14)).astype(np.int8))
    opts = LabelAgreementOptions(no_finding_when_empty=False)
    got = top1_label_f1(q, p, obs, opts)
    idx = [OBSERVATION_INDEX[o] for o in obs]
    y_true, y_pred = (q.numpy()[:, idx] == 1), (p.numpy()[:, idx] == 1)
    assert got["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_metric_reports_label_agreement_of_retrieved_reports():
    # 3 studies; study 2's image is closest to study 0's report -> its top-1 report has study 0's labels
    img = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.0, 0.1]])
    txt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.stack([_lab(Edema=1), _lab(Pneumothorax=1), _lab(Edema=1, Atelectasis=1)])
    m = ImageTextRetrieval(ks=(1, 2))
    m.update(img, txt, torch.arange(3), torch.arange(3) + 10, torch.arange(3), labels)
    out = m.compute()
    assert out["i2t_R@1"].item() == pytest.approx(2 / 3)
    assert out["i2t_exact_P@1"].item() == pytest.approx(2 / 3)
    assert out["i2t_overlap_P@1"].item() == pytest.approx(1.0)
    assert "i2t_top1_micro_f1_5" in out and "i2t_top1_macro_f1_14" in out
    # without labels (or all NOT_MENTIONED) there are no label keys
    m2 = ImageTextRetrieval(ks=(1,))
    m2.update(img, txt, torch.arange(3), torch.arange(3), torch.arange(3),
              torch.full((3, 14), int(LabelState.NOT_MENTIONED), dtype=torch.int8))
    assert not any("P@" in k for k in m2.compute())
