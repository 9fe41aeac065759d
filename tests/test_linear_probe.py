"""Linear probe: the torch logistic regression equals sklearn's, the L2 is chosen on validation, AUROC per
observation, the untrained baseline really is re-initialised; the CLI on a tiny trained run (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cxr.evaluation.linear_probe import SplitFeatures, fit_logistic, observation_aurocs, run_probe
from cxr.labels import OBSERVATION_INDEX, LabelState


def test_fit_logistic_equals_sklearn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g, dtype=torch.float64)
    y = ((x[:, :1] + 0.8 * torch.randn(120, 1, generator=g, dtype=torch.float64)) > 0).double()
    l2 = 0.05
    w, b = fit_logistic(x, y, torch.ones_like(y, dtype=torch.bool), l2)
    # ours: mean BCE + l2/2·|w|²  <=>  sklearn: C·ΣBCE + |w|²/2 with C = 1/(l2·n)
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=10_000).fit(x.numpy(), y[:, 0].numpy())
    assert ref.n_iter_[0] < 500  # the probe's iteration cap is not what makes them agree
    np.testing.assert_allclose(w[:, 0].numpy(), ref.coef_[0], atol=1e-4)
    np.testing.assert_allclose(b.numpy(), ref.intercept_, atol=1e-4)


def _world(n: int, seed: int, informative: bool = True) -> SplitFeatures:
    """Features where dim c carries observation c's label (Edema, Pneumothorax); Fracture stays all negative."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((n, 14), int(LabelState.NOT_MENTIONED), dtype=torch.int8)
    feats = torch.randn(n, 6, generator=g)
    for c, obs in enumerate(("Edema", "Pneumothorax")):
        pos = torch.rand(n, generator=g) < 0.4
        labels[pos, OBSERVATION_INDEX[obs]] = int(LabelState.POSITIVE)
        if informative:
            feats[:, c] += 2.5 * pos.float()
    return SplitFeatures(feats, labels)


def test_probe_reports_observations_with_both_classes_and_picks_l2_on_val():
    result = run_probe(_world(200, 0), _world(60, 1), _world(100, 2), l2_grid=(1e-3, 1e-1, 100.0))
    assert result.observations == ["Edema", "Pneumothorax"]  # the others have no positives
    assert result.test_auroc["Edema"] > 0.9 and result.test_auroc["Pneumothorax"] > 0.9
    assert set(result.val_mean_auroc) == {"0.001", "0.1", "100.0"}
    assert result.l2 == max((float(k) for k in result.val_mean_auroc), key=lambda k: result.val_mean_auroc[str(k)])
    noise = run_probe(_world(200, 0, False), _world(60, 1, False), _world(100, 2, False))
    assert abs(noise.test_auroc["mean"] - 0.5) < 0.15  # uninformative features: chance


def test_observation_aurocs_match_sklearn_and_skip_one_class():
    g = torch.Generator().manual_seed(3)
    scores, y = torch.randn(50, 2, generator=g), (torch.rand(50, 2, generator=g) > 0.5).long()
    y[:, 1] = 1
    out = observation_aurocs(scores, y, torch.ones_like(y, dtype=torch.bool), ["A", "B"])
    assert out["A"] == pytest.approx(roc_auc_score(y[:, 0].numpy(), scores[:, 0].numpy()), abs=1e-6)
    assert math.isnan(out["B"]) and out["mean"] == pytest.approx(out["A"])


@pytest.mark.slow
def test_probe_cli_trained_and_untrained(tmp_path, synthetic_dataset):
    from _tiny_clip_run import train_tiny_clip

    from cxr.evaluation.linear_probe import main, untrained_copy
    from cxr.evaluation.model_loading import load_checkpoint_model

    world = synthetic_dataset("csv", num_studies=100, seed=0, image_size=64)
    run = train_tiny_clip(tmp_path, world / "manifest.csv", max_steps=2)
    outs = {}
    for flag in ([], ["--untrained"]):
        out = tmp_path / ("untrained" if flag else "trained")
        assert main(["--checkpoint", str(run.checkpoint), "--data", f"synth={run.train_config}", "--out", str(out),
                     "--batch-size", "16", "--l2", "0.01", *flag]) == 0
        outs[bool(flag)] = json.loads((out / "linear_probe.json").read_text())
    for res in outs.values():
        assert res["observations"] and 0 <= res["test_auroc"]["mean"] <= 1
        assert res["settings"]["splits"]["train"] > 0 and res["num_train"] == res["settings"]["splits"]["train"]
    assert outs[True]["settings"]["untrained"] and outs[True]["test_auroc"] != outs[False]["test_auroc"]
    model = load_checkpoint_model(run.checkpoint)
    before = {k: v.clone() for k, v in model.vision.state_dict().items()}
    fresh = untrained_copy(model).vision.state_dict()
    assert any(not torch.equal(before[k], fresh[k]) for k in before if before[k].is_floating_point())
