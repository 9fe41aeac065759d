"""Zero-shot prompt-pair scoring and AUROC against sklearn; the uncertain policy is applied."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxr.evaluation.zero_shot import default_prompts, zero_shot_auroc, zero_shot_evaluate, zero_shot_scores
from cxr.labels import OBSERVATION_INDEX, LabelState

OBS = ["Edema", "Pneumothorax", "Fracture"]


def _labels(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lab = rng.choice([1, 0, -1, -2], size=(n, 14)).astype(np.int8)
    lab[:, OBSERVATION_INDEX["Fracture"]] = 0  # no positives -> NaN, left out of the mean
    return torch.from_numpy(lab)


def test_auroc_equals_sklearn_and_mean_skips_undefined():
    labels = _labels(80, 0)
    scores = torch.rand(80, 3, generator=torch.Generator().manual_seed(0))
    out = zero_shot_auroc(scores, labels, OBS)
    for c, obs in enumerate(OBS[:2]):
        y = (labels[:, OBSERVATION_INDEX[obs]] == 1).numpy()
        assert out[obs] == pytest.approx(roc_auc_score(y, scores[:, c].numpy()), abs=1e-6)
    assert math.isnan(out["Fracture"])
    assert out["mean"] == pytest.approx((out["Edema"] + out["Pneumothorax"]) / 2)
    ignore = zero_shot_auroc(scores, labels, OBS, "ignore")
    keep = (labels[:, OBSERVATION_INDEX["Edema"]] != LabelState.UNCERTAIN).numpy()
    y = (labels[:, OBSERVATION_INDEX["Edema"]] == 1).numpy()[keep]
    assert ignore["Edema"] == pytest.approx(roc_auc_score(y, scores[:, 0].numpy()[keep]), abs=1e-6)


def test_prompt_pairs_separate_an_aligned_embedding_space():
    # text "encoder": present prompts map to +e_c, absent ones to -e_c; images carry +e_c when positive
    prompts = default_prompts(OBS[:2])
    table = {p.present: torch.eye(4)[i] for i, p in enumerate(prompts)}
    table.update({p.absent: -torch.eye(4)[i] for i, p in enumerate(prompts)})
    labels = _labels(40, 1)
    pos = torch.stack([(labels[:, OBSERVATION_INDEX[o]] == 1).float() * 2 - 1 for o in OBS[:2]], dim=1)
    images = torch.cat([pos, torch.randn(40, 2) * 0.1], dim=1)
    out = zero_shot_evaluate(lambda texts: torch.stack([table[t] for t in texts]), images, labels, prompts)
    assert out["Edema"] == pytest.approx(1.0) and out["mean"] == pytest.approx(1.0)
    s = zero_shot_scores(images, torch.eye(4)[:2], -torch.eye(4)[:2])
    assert s.shape == (40, 2) and bool(((s >= 0) & (s <= 1)).all())
