"""Phantom renderer: range, determinism, every finding visible, laterality in pixels (radiological convention)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.data.synthetic.findings import Device, Finding, Laterality, PlacedDevice, Severity, Zone
from cxr.data.synthetic.phantom import PhantomSpec, render_phantom
from cxr.labels import LabelState
from cxr.records import ViewPosition

SIZE = 64


def render(findings=(), devices=(), view=ViewPosition.PA, seed=3, size=SIZE):
    return render_phantom(PhantomSpec(view=view, findings=tuple(findings), devices=tuple(devices), seed=seed,
                                      finding_seed=11), size)


def pos(name, side=Laterality.RIGHT, sev=Severity.LARGE, zone=Zone.LOWER, state=LabelState.POSITIVE):
    return Finding(name, state, side, sev, zone)


def test_range_dtype_and_determinism():
    img = render()
    assert img.shape == (SIZE, SIZE) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.1
    assert np.array_equal(img, render())
    assert not np.array_equal(img, render(seed=4))
    assert render(size=128).shape == (128, 128)


def half_energy(diff: np.ndarray) -> tuple[float, float]:
    """Absolute change on the image-left and image-right halves."""
    w = diff.shape[1] // 2
    return float(np.abs(diff[:, :w]).sum()), float(np.abs(diff[:, w:]).sum())


@pytest.mark.parametrize("name", ["Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis",
                                  "Lung Lesion", "Fracture", "Pleural Other"])
def test_laterality_in_pixels(name):
    base = render()
    left_img, right_img = half_energy(render([pos(name, Laterality.RIGHT)]) - base)
    # Patient RIGHT is on the IMAGE LEFT (PA/AP radiological convention).
    assert left_img > 4 * right_img, (name, left_img, right_img)
    left_img, right_img = half_energy(render([pos(name, Laterality.LEFT)]) - base)
    assert right_img > 4 * left_img, (name, left_img, right_img)


FINDINGS = ["Pleural Effusion", "Pneumothorax", "Consolidation", "Pneumonia", "Lung Opacity", "Edema",
            "Atelectasis", "Lung Lesion", "Fracture", "Pleural Other", "Cardiomegaly", "Enlarged Cardiomediastinum"]


@pytest.mark.parametrize("name", FINDINGS)
def test_every_finding_changes_the_image(name):
    side = Laterality.BILATERAL if name == "Edema" else Laterality.RIGHT
    diff = np.abs(render([pos(name, side)]) - render())
    assert diff.max() > 0.15, name
    assert (diff > 0.05).sum() >= 4, name  # focal findings are small but clearly visible
    negated = Finding(name, LabelState.NEGATIVE)
    assert np.array_equal(render([negated]), render()), "negated findings must not be drawn"


def test_uncertain_is_fainter_than_positive():
    base = render()
    strong = np.abs(render([pos("Pleural Effusion", sev=Severity.MODERATE)]) - base).sum()
    faint = np.abs(render([pos("Pleural Effusion", sev=Severity.MODERATE, state=LabelState.UNCERTAIN)]) - base).sum()
    assert 0 < faint < strong


def test_effusion_fills_the_base_and_cardiomegaly_widens_heart():
    base = render(size=128)
    eff = render([pos("Pleural Effusion", sev=Severity.SMALL)], size=128) - base
    rows = np.abs(eff).sum(axis=1)
    assert rows[64:].sum() > 3 * rows[:64].sum()  # fluid sits at the lung base
    big = render([pos("Cardiomegaly")], size=128)
    band = slice(80, 100)  # heart level
    assert (big[band] > 0.65).sum() > (base[band] > 0.65).sum() * 1.15


@pytest.mark.parametrize("device", list(Device))
def test_devices_are_bright(device):
    img = render(devices=[PlacedDevice(device, Laterality.LEFT)])
    diff = img - render()
    assert diff.max() > 0.2 and (diff > 0.1).sum() >= 5


def test_lateral_view_differs_from_frontal():
    frontal, lateral = render(size=128), render(view=ViewPosition.LATERAL, size=128)
    assert np.abs(frontal - lateral).mean() > 0.05
    # Frontal: spine/mediastinum in the middle column; lateral: lung in the middle, spine posterior (image right).
    middle, posterior = np.s_[30:60, 62:66], np.s_[30:60, 96:102]
    assert frontal[middle].mean() > frontal[posterior].mean() + 0.2
    assert lateral[posterior].mean() > lateral[middle].mean() + 0.2
    eff = np.abs(render([pos("Pleural Effusion", sev=Severity.SMALL)], view=ViewPosition.LATERAL, size=128) - lateral)
    assert eff[64:].sum() > 3 * eff[:64].sum()
