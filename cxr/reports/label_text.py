"""Turn a 14-observation label vector into a short label sentence ("Pleural effusion. No pneumothorax.")."""

from __future__ import annotations

import random

import numpy as np

from cxr.labels import CHEXPERT_OBSERVATIONS, LabelState

_POSITIVE_PHRASE = {"No Finding": "No acute cardiopulmonary findings", "Support Devices": "Support devices present",
                    "Pleural Other": "Other pleural abnormality", "Enlarged Cardiomediastinum":
                    "Enlarged cardiomediastinal silhouette"}
_NEGATIVE_PHRASE = {"Support Devices": "No support devices", "Pleural Other": "No other pleural abnormality",
                    "Enlarged Cardiomediastinum": "No enlargement of the cardiomediastinal silhouette"}


def _positive(name: str) -> str:
    return _POSITIVE_PHRASE.get(name, name[:1] + name[1:].lower())


def _negative(name: str) -> str:
    return _NEGATIVE_PHRASE.get(name, "No " + name.lower())


def label_sentence(labels: np.ndarray) -> str | None:
    """Positives first, then uncertain ("Possible x."), then negatives ("No x."); None if nothing is mentioned.

    "No Finding" contributes only when positive (its negative says nothing).
    """
    pos, unc, neg = [], [], []
    for name, state in zip(CHEXPERT_OBSERVATIONS, np.asarray(labels).tolist(), strict=False):
        if state == LabelState.POSITIVE:
            pos.append(_positive(name) + ".")
        elif state == LabelState.UNCERTAIN:
            unc.append("Possible " + name.lower() + ".")
        elif state == LabelState.NEGATIVE and name != "No Finding":
            neg.append(_negative(name) + ".")
    parts = pos + unc + neg
    return " ".join(parts) if parts else None


def flipped_label_sentence(labels: np.ndarray, rng: random.Random) -> str | None:
    """The label sentence with one mentioned observation (not "No Finding") flipped positive ↔ negative.

    A hard negative for the classify task; None when nothing can be flipped.
    """
    labels = np.asarray(labels).copy()
    flippable = [i for i, (name, s) in enumerate(zip(CHEXPERT_OBSERVATIONS, labels.tolist(), strict=False))
                 if name != "No Finding" and s in (LabelState.POSITIVE, LabelState.NEGATIVE, LabelState.UNCERTAIN)]
    if not flippable:
        return None
    i = rng.choice(flippable)
    labels[i] = LabelState.NEGATIVE if labels[i] in (LabelState.POSITIVE, LabelState.UNCERTAIN) \
        else LabelState.POSITIVE
    no_finding = CHEXPERT_OBSERVATIONS.index("No Finding")
    if labels[i] == LabelState.POSITIVE and labels[no_finding] == LabelState.POSITIVE:
        labels[no_finding] = LabelState.NOT_MENTIONED  # keep the corrupted sentence self-consistent
    return label_sentence(labels)
